-- hot lock, lockfence's transaction lock in the advisory side's shape.
BEGIN;
SELECT lockfence.acquire_xact('hot', '60 s');
COMMIT;
