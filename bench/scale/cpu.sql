-- Control for reader.sql: CPU work without lockfence.
SELECT count(*) FROM generate_series(1, 100000);
