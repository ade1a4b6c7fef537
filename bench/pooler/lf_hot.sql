-- hot lock, lockfence: acquire and release, nothing between.
SELECT lockfence.acquire('hot', '10 s', '60 s') AS tok \gset
SELECT lockfence.release('hot', :tok);
