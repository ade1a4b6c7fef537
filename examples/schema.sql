-- Tables of the example worker (examples/worker.py).  Load them with
--   psql -d DSN -f examples/schema.sql
-- in a database where lockfence is installed (CREATE EXTENSION lockfence,
-- by a superuser, with lockfence in shared_preload_libraries).

-- One row per queue: how many work items were completed on it.  Only the
-- holder of the lease on 'queue:<name>' may write it: the fence trigger, in
-- lease mode, rejects a write whose token is not the live holder (LF001).
CREATE TABLE queues (
    name        text PRIMARY KEY,
    done        bigint NOT NULL DEFAULT 0,
    fence_token bigint
);
CREATE TRIGGER queues_fence BEFORE INSERT OR UPDATE ON queues
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'queue:', 'name');

-- One row per completed work item, fenced on the same lock.  item is the
-- value of queues.done that the item produced, so a lost update would show
-- up as a duplicate (and the unique constraint refuses it).
CREATE TABLE work_log (
    id          bigserial PRIMARY KEY,
    queue       text NOT NULL,
    item        bigint NOT NULL,
    worker      text NOT NULL,
    fence_token bigint NOT NULL,
    done_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (queue, item)
);
CREATE TRIGGER work_log_fence BEFORE INSERT OR UPDATE ON work_log
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'queue:', 'queue');

-- One row for all queues, updated by every worker whatever lock it holds.
-- The workers write at REPEATABLE READ, so two of them committing at the
-- same moment make one fail with SQLSTATE 40001: it retries its transaction.
CREATE TABLE totals (
    id   int PRIMARY KEY,
    done bigint NOT NULL
);
INSERT INTO totals VALUES (1, 0);
