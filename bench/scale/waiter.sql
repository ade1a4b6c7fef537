-- Queues on the held lock 'hot' for up to 10 minutes.
SELECT lockfence.release('hot', lockfence.acquire('hot', '1 min', '10 min'));
