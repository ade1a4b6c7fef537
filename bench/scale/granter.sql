-- Control for attacker.sql: grants and releases a lock of its own.
SELECT public.grant_release('grant:' || :client_id);
