-- hot lock + UPDATE, lockfence: every client takes lock 'hot', increments row 0, releases.
SELECT lockfence.acquire('hot', '10 s', '60 s') AS tok \gset
UPDATE ctr SET v = v + 1 WHERE id = 0;
SELECT lockfence.release('hot', :tok);
