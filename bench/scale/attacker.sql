-- A role at its quota asking for more locks (each request is refused).
\set k random(1, 1000000000)
SELECT public.grant_release('attack:' || :k);
