-- Reads the whole lockfence.locks view.
SELECT count(*) FROM lockfence.locks;
