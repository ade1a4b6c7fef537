-- Baseline 2, the fair table lease: same acquire, release by expiring the
-- row (expires_at = -infinity), which keeps it, so the token keeps growing
-- like a fence token.  bench.leases_upd is pre-filled with every key.
\set k random(1, :nkeys)
\set tok 0
INSERT INTO bench.leases_upd AS l (name, token, expires_at)
    VALUES (:k::text, 1, now() + interval '1 min')
    ON CONFLICT (name) DO UPDATE SET token = l.token + 1, expires_at = excluded.expires_at
    WHERE l.expires_at < now()
    RETURNING token AS tok \aset
\if :tok > 0
UPDATE bench.leases_upd SET expires_at = '-infinity' WHERE name = :k::text AND token = :tok;
\endif
