-- Control for waiter.sql: a client that only sleeps.
SELECT pg_sleep(600);
