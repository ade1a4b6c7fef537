-- Baseline 2, the table lease: take the row if it is absent or its
-- lease ran out, release by DELETE.  The token restarts at 1 whenever the
-- row was deleted, so it is not a fence token.  Never blocks for long: a
-- held lease returns no row (\aset then leaves tok at 0).
\set k random(1, :nkeys)
\set tok 0
INSERT INTO bench.leases_del AS l (name, token, expires_at)
    VALUES (:k::text, 1, now() + interval '1 min')
    ON CONFLICT (name) DO UPDATE SET token = l.token + 1, expires_at = excluded.expires_at
    WHERE l.expires_at < now()
    RETURNING token AS tok \aset
\if :tok > 0
DELETE FROM bench.leases_del WHERE name = :k::text AND token = :tok;
\endif
