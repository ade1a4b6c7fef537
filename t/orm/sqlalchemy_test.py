#!/usr/bin/python3
"""lockfence's lock_version_check trigger under the real SQLAlchemy 1.4 ORM.

SQLAlchemy's version_id_col sends "the next version" (the version read plus
one) together with "WHERE ... AND version_id = <the version read>".  This
script shows that the trigger accepts exactly that and changes nothing the
ORM can observe: every scenario runs against two identical declarative
models, sa_accounts (with the trigger, created from an after_create DDL
event) and sa_accounts_plain (no trigger, the control), and the two must
give the same observations.  It also shows lockfence.lock_row() and
lock_rows() inside an ORM transaction and, last, what the trigger adds: a
raw-SQL writer carrying a stale version is refused with SQLSTATE 40001 on
sa_accounts, while the control silently accepts it.

Connects through the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER);
the lockfence extension must already exist.  Prints one "ok - ..." or
"not ok - ..." line per check, "# " diagnostics, and a final
"done: <N> checks, <F> failed" line; exits 0 iff every check passed.
Waits and timeouts are multiplied by LF_TIME_SCALE (default 1).
"""

import os
import random
import threading
import time

from sqlalchemy import DDL, Column, Integer, String, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, declarative_base, declared_attr
from sqlalchemy.orm.exc import StaleDataError

import tap_checks
from tap_checks import SCALE, check, fail, out

PREFIX = "sqlalchemy"

tap_checks.prefix = PREFIX


def seconds(s):
    return s * SCALE


def interval(ms):
    """A lock_row timeout argument, e.g. '200 ms' (scaled)."""
    return f"{int(ms * SCALE)} ms"


def within(elapsed, lo, hi):
    """Observation of a duration: "in range", or the duration itself."""
    return "in range" if lo <= elapsed <= hi else f"{elapsed:.3f} s, not in [{lo:.3f}, {hi:.3f}]"


def pgcode(exc):
    return getattr(getattr(exc, "orig", None), "pgcode", None)


# --- the models -----------------------------------------------------------

Base = declarative_base()


class AccountColumns:
    id = Column(Integer, primary_key=True, autoincrement=False)
    name = Column(String(50), nullable=False)
    balance = Column(Integer, nullable=False, default=0)
    counter = Column(Integer, nullable=False, default=0)
    version_id = Column(Integer, nullable=False)

    @declared_attr
    def __mapper_args__(cls):
        return {"version_id_col": cls.version_id}


class Account(AccountColumns, Base):
    """With lockfence's trigger."""
    __tablename__ = "sa_accounts"


class PlainAccount(AccountColumns, Base):
    """The control: the same model, no trigger."""
    __tablename__ = "sa_accounts_plain"


event.listen(
    Account.__table__,
    "after_create",
    DDL("CREATE TRIGGER sa_accounts_lock_version "
        "BEFORE INSERT OR UPDATE ON %(table)s FOR EACH ROW "
        "EXECUTE FUNCTION lockfence.lock_version_check('version_id')"),
)

# With psycopg2 the parameters are sent as quoted literals, whose type the
# server infers from the function's signature: 'sa_accounts' becomes a
# regclass, '2 s' an interval, 5 an integer and [1, 2] an integer[].  No
# casts are needed.
LOCK_ROW = text("SELECT lockfence.lock_row(:rel, :id, :t)")
LOCK_ROWS = text("SELECT lockfence.lock_rows(:rel, :ids, :t)")

engine = create_engine("postgresql+psycopg2://", future=True)

# Statements the ORM sends, recorded while `recording` is set.
recording = False
recorded = []


@event.listens_for(engine, "before_cursor_execute")
def record_statement(conn, cursor, statement, parameters, context, executemany):
    if recording:
        recorded.append((statement, parameters))


# --- helpers --------------------------------------------------------------

def row(M, id):
    """(balance, counter, version_id) of a row, read through a fresh connection."""
    with engine.connect() as c:
        return tuple(c.execute(
            text(f"SELECT balance, counter, version_id FROM {M.__tablename__} WHERE id = :id"),
            {"id": id}).one())


def new_row(M, id, balance=100):
    with Session(engine, future=True) as s:
        s.add(M(id=id, name=f"account {id}", balance=balance))
        s.commit()


def other_lock_row(M, id, ms):
    """lock_row from another connection: (result or SQLSTATE, seconds taken)."""
    with engine.connect() as c:
        start = time.monotonic()
        try:
            got = c.execute(LOCK_ROW, {"rel": M.__tablename__, "id": id, "t": interval(ms)}).scalar()
        except OperationalError as e:
            got = pgcode(e)
        elapsed = time.monotonic() - start
        c.rollback()
    return got, elapsed


def wait_until_blocked(pid):
    """True once backend pid waits for a lock."""
    deadline = time.monotonic() + seconds(5)
    with engine.connect() as c:
        while time.monotonic() < deadline:
            waiting = c.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid}).scalar()
            c.rollback()
            if waiting == "Lock":
                return True
            time.sleep(0.01)
    return False


# --- the scenarios --------------------------------------------------------
# Each takes a model, uses rows of its own, and returns a list of
# (what, got, want) observations.

def scenario_insert(M):
    obs = []
    with Session(engine, future=True) as s:
        a = M(id=10, name="alice", balance=100)
        s.add(a)
        s.flush()
        obs.append(("object version after flush", a.version_id, 1))
        s.commit()
    obs.append(("row (balance, counter, version)", row(M, 10), (100, 0, 1)))
    return obs


def scenario_update(M):
    global recording
    obs = []
    new_row(M, 20)
    with Session(engine, future=True) as s:
        a = s.get(M, 20)
        a.balance = 150
        recorded.clear()
        recording = True
        s.flush()
        recording = False
        obs.append(("object version after first update", a.version_id, 2))
        s.commit()
        obs.append(("row after first update", row(M, 20), (150, 0, 2)))

        # what the ORM sent: SET version_id = read + 1, WHERE version_id = read
        updates = [(st, p) for st, p in recorded if st.startswith("UPDATE")]
        obs.append(("the flush sent one UPDATE", len(updates), 1))
        if updates:
            st, p = updates[0]
            where = [v for k, v in p.items() if k.endswith("_version_id")]
            obs.append(("UPDATE sets version_id = read + 1, filters version_id = read",
                        ("version_id=%(version_id)s" in st,
                         f".version_id = %({M.__tablename__}_version_id)s" in st,
                         p.get("version_id"), where),
                        (True, True, 2, [1])))

        a.balance = 175            # object expired by the commit: reloaded first
        s.commit()
        obs.append(("object version after second update", a.version_id, 3))
    obs.append(("row after second update", row(M, 20), (175, 0, 3)))
    return obs


def scenario_stale_flush(M):
    obs = []
    new_row(M, 30)
    s1 = Session(engine, future=True)
    s2 = Session(engine, future=True)
    try:
        a1 = s1.get(M, 30)
        a2 = s2.get(M, 30)
        obs.append(("both sessions read version 1", (a1.version_id, a2.version_id), (1, 1)))
        a1.balance = 200
        s1.commit()
        a2.balance = 300
        try:
            s2.commit()
            got = "committed"
        except StaleDataError:
            got = "StaleDataError"
        except DBAPIError as e:
            got = f"DBAPIError {pgcode(e)}"
        obs.append(("second session's stale commit", got, "StaleDataError"))
        obs.append(("row keeps the first session's change", row(M, 30), (200, 0, 2)))

        s2.rollback()
        s2.refresh(a2)
        obs.append(("second session sees version 2 after rollback + refresh",
                    (a2.balance, a2.version_id), (200, 2)))
        a2.balance = 300
        s2.commit()
        obs.append(("row after the second session saves again", row(M, 30), (300, 0, 3)))
    finally:
        s1.close()
        s2.close()
    return obs


def scenario_concurrent_flush(M):
    obs = []
    new_row(M, 40)
    sa = Session(engine, future=True)
    sb = Session(engine, future=True)
    result = {}
    try:
        a = sa.get(M, 40)
        b = sb.get(M, 40)
        b_pid = sb.execute(text("SELECT pg_backend_pid()")).scalar()
        a.balance = 400
        sa.flush()                  # A's UPDATE holds the row lock, uncommitted

        def b_flush():
            b.balance = 500
            try:
                sb.flush()
                result["b"] = "flushed"
            except StaleDataError:
                result["b"] = "StaleDataError"
            except DBAPIError as e:
                result["b"] = f"DBAPIError {pgcode(e)}"
            except Exception as e:  # reported as an observation
                result["b"] = f"{type(e).__name__}: {e}"

        t = threading.Thread(target=b_flush, daemon=True)
        t.start()
        obs.append(("B's flush waits for A's row lock", wait_until_blocked(b_pid), True))
        obs.append(("B is still waiting", (t.is_alive(), result.get("b")), (True, None)))
        sa.commit()
        t.join(seconds(10))
        obs.append(("B's flush after A commits", result.get("b", "still waiting"), "StaleDataError"))
        sb.rollback()
        obs.append(("row keeps A's change", row(M, 40), (400, 0, 2)))
    finally:
        sa.close()
        sb.close()
    return obs


def scenario_for_update(M):
    obs = []
    new_row(M, 50)
    with Session(engine, future=True) as s:
        a = s.query(M).with_for_update().filter_by(id=50).one()
        obs.append(("version loaded FOR UPDATE", a.version_id, 1))
        a.balance = 600

        got, elapsed = other_lock_row(M, 50, 200)
        obs.append(("another connection's lock_row(200 ms) while FOR UPDATE is held", got, "55P03"))
        obs.append(("it waited about the timeout", within(elapsed, 0.19 * SCALE, 0.2 * SCALE + seconds(2)), "in range"))

        s.commit()
        obs.append(("object version after commit", a.version_id, 2))
    obs.append(("row after commit", row(M, 50), (600, 0, 2)))
    got, _ = other_lock_row(M, 50, 200)
    obs.append(("another connection's lock_row after the commit", got, True))
    return obs


def scenario_lock_row_in_session(M):
    obs = []
    rel = M.__tablename__
    id1, id2 = 60, 61
    new_row(M, id1)
    new_row(M, id2)
    state = text("SELECT pg_backend_pid(), txid_current()")

    with Session(engine, future=True) as s:
        s.execute(text("SET LOCAL lock_timeout = '7s'"))
        before = tuple(s.execute(state).one())
        got = s.execute(LOCK_ROW, {"rel": rel, "id": id1, "t": "2 s"}).scalar()
        obs.append(("lock_row in the session's transaction", got, True))
        after = tuple(s.execute(state).one())
        obs.append(("same backend and transaction before and after lock_row", after == before, True))
        obs.append(("lock_timeout after lock_row", s.execute(text("SHOW lock_timeout")).scalar(), "7s"))

        # lock_rows waits for id2 (held for a moment by another connection),
        # so it really installs and then removes its own lock_timeout
        holder = engine.connect()
        holder.execute(text(f"SELECT 1 FROM {rel} WHERE id = :id FOR UPDATE"), {"id": id2})
        release = threading.Timer(seconds(0.3), holder.rollback)
        release.start()
        start = time.monotonic()
        got = s.execute(LOCK_ROWS, {"rel": rel, "ids": [id2, id1], "t": "5 s"}).scalar()
        elapsed = time.monotonic() - start
        release.join()
        holder.close()
        obs.append(("lock_rows([id2, id1]) after waiting for id2", got, 2))
        obs.append(("lock_rows waited for the other connection", within(elapsed, 0.25 * SCALE, seconds(5)), "in range"))
        obs.append(("lock_timeout after a lock_rows that waited", s.execute(text("SHOW lock_timeout")).scalar(), "7s"))
        obs.append(("still the same backend and transaction", tuple(s.execute(state).one()) == before, True))

        got, elapsed = other_lock_row(M, id1, 200)
        obs.append(("another connection's lock_row(id1, 200 ms)", got, "55P03"))
        obs.append(("it waited about the timeout", within(elapsed, 0.19 * SCALE, 0.2 * SCALE + seconds(2)), "in range"))
        got, _ = other_lock_row(M, id2, 200)
        obs.append(("another connection's lock_row(id2, 200 ms)", got, "55P03"))

        a = s.get(M, id1)
        a.balance = 160
        s.commit()
        obs.append(("object version after modify + commit", a.version_id, 2))
    obs.append(("row after commit", row(M, id1), (160, 0, 2)))
    got, _ = other_lock_row(M, id1, 200)
    obs.append(("another connection's lock_row(id1) after the commit", got, True))

    # a lock_row that times out inside the ORM transaction
    holder = engine.connect()
    try:
        holder.execute(text(f"SELECT 1 FROM {rel} WHERE id = :id FOR UPDATE"), {"id": id1})
        with Session(engine, future=True) as s:
            start = time.monotonic()
            try:
                got = s.execute(LOCK_ROW, {"rel": rel, "id": id1, "t": interval(300)}).scalar()
            except OperationalError as e:
                got = f"OperationalError {pgcode(e)}"
            elapsed = time.monotonic() - start
            obs.append(("session's lock_row(300 ms) on a row held FOR UPDATE", got, "OperationalError 55P03"))
            obs.append(("it waited about the timeout", within(elapsed, 0.29 * SCALE, 0.3 * SCALE + seconds(2)), "in range"))
            s.rollback()
            obs.append(("the session works after rollback", s.execute(text("SELECT 1")).scalar(), 1))
            obs.append(("and loads the object", s.get(M, id2).version_id, 1))
    finally:
        holder.rollback()
        holder.close()
    return obs


def scenario_bulk_update(M):
    global recording
    obs = []
    new_row(M, 70)
    with Session(engine, future=True) as s:
        recorded.clear()
        recording = True
        n = s.query(M).filter_by(id=70).update({"balance": 777})
        recording = False
        s.commit()
    obs.append(("bulk update's rowcount", n, 1))
    updates = [st for st, _ in recorded if st.startswith("UPDATE")]
    obs.append(("the bulk UPDATE does not mention version_id",
                [("version_id" in st) for st in updates], [False]))
    obs.append(("row after the bulk update: version unchanged", row(M, 70), (777, 0, 1)))
    return obs


N_THREADS = 6
M_COMMITS = 15


def scenario_increments(M):
    obs = []
    rid = 80
    new_row(M, rid)
    initial = row(M, rid)[2]
    lock = threading.Lock()
    tally = {"ok": 0, "stale": 0, "other": []}

    def worker():
        done = 0
        attempts = 0
        with Session(engine, future=True) as s:
            while done < M_COMMITS and attempts < 1000:
                attempts += 1
                try:
                    obj = s.get(M, rid)
                    obj.counter = obj.counter + 1
                    time.sleep(random.uniform(0, 0.005) * SCALE)
                    s.commit()
                    done += 1
                    with lock:
                        tally["ok"] += 1
                except StaleDataError:
                    s.rollback()
                    with lock:
                        tally["stale"] += 1
                except Exception as e:
                    s.rollback()
                    with lock:
                        tally["other"].append(f"{type(e).__name__}: {e}".strip())

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(N_THREADS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds(20)
    for t in threads:
        t.join(max(0, deadline - time.monotonic()))
    obs.append(("all threads finished", sum(t.is_alive() for t in threads), 0))
    with lock:
        ok, stale, other = tally["ok"], tally["stale"], list(tally["other"])
    balance, counter, version = row(M, rid)
    obs.append(("successful commits", ok, N_THREADS * M_COMMITS))
    obs.append(("final counter", counter, N_THREADS * M_COMMITS))
    obs.append(("final counter equals the successful commits", counter == ok, True))
    obs.append(("final version = initial + commits", version - initial, N_THREADS * M_COMMITS))
    obs.append(("at least one StaleDataError retry (contention)", stale > 0, True))
    obs.append(("no other errors", other[:3], []))
    out(f"# {M.__tablename__}: {ok} commits, {stale} StaleDataError retries")
    return obs


def scenario_raw_stale_writer(M, trigger):
    obs = []
    new_row(M, 90)
    with Session(engine, future=True) as s:
        a = s.get(M, 90)
        a.balance = 910
        s.commit()                          # version 2
    with engine.connect() as c:
        try:
            n = c.execute(text(f"UPDATE {M.__tablename__} SET balance = 0, version_id = :stale WHERE id = :id"),
                          {"stale": 1, "id": 90}).rowcount
            c.commit()
            got, message = f"accepted, {n} row", None
        except DBAPIError as e:
            c.rollback()
            got, message = f"DBAPIError {pgcode(e)}", e.orig.diag.message_primary
    if trigger:
        obs.append(("raw UPDATE carrying stale version 1 (row has 2)", got, "DBAPIError 40001"))
        obs.append(("its message", message,
                    f'row in relation "{M.__tablename__}" was changed by another transaction'))
        obs.append(("the row is unchanged", row(M, 90), (910, 0, 2)))
    else:
        # no trigger: the stale write goes through and even moves the version back
        obs.append(("raw UPDATE carrying stale version 1 (row has 2)", got, "accepted, 1 row"))
        obs.append(("the row is overwritten, version moved back", row(M, 90), (0, 0, 1)))
    return obs


SCENARIOS = [
    ("insert", scenario_insert),
    ("update", scenario_update),
    ("stale flush", scenario_stale_flush),
    ("concurrent flush", scenario_concurrent_flush),
    ("with_for_update", scenario_for_update),
    ("lock_row in ORM transaction", scenario_lock_row_in_session),
    ("bulk update", scenario_bulk_update),
    ("concurrent increments", scenario_increments),
]


def run(name, fn, M, *args):
    try:
        return fn(M, *args)
    except Exception as e:
        fail(f"{M.__tablename__}: {name}", e)
        return None


def main():
    # the engine's URL names nothing: libpq's environment decides
    with engine.connect() as c:
        db, user, port, sockets = c.execute(text(
            "SELECT current_database(), current_user, current_setting('port'),"
            " current_setting('unix_socket_directories')")).one()
    host = os.environ.get("PGHOST", "")
    got = (db, user, port, host in [d.strip() for d in sockets.split(",")] if host.startswith("/") else True)
    want = (os.environ.get("PGDATABASE", db), os.environ.get("PGUSER", user),
            os.environ.get("PGPORT", port), True)
    check("create_engine('postgresql+psycopg2://') connects through PGHOST, PGPORT, PGDATABASE, PGUSER",
          got, want)

    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    try:
        with engine.connect() as c:
            triggers = c.execute(text(
                "SELECT c.relname, count(t.oid) FROM pg_class c"
                " LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal"
                " WHERE c.relname IN ('sa_accounts', 'sa_accounts_plain')"
                " GROUP BY c.relname ORDER BY c.relname")).all()
        check("after_create DDL put the trigger on sa_accounts only",
              [tuple(r) for r in triggers], [("sa_accounts", 1), ("sa_accounts_plain", 0)])

        for name, fn in SCENARIOS:
            results = {}
            for M in (Account, PlainAccount):
                obs = run(name, fn, M)
                if obs is None:
                    continue
                results[M] = [(what, got) for what, got, _ in obs]
                for what, got, want in obs:
                    check(f"{M.__tablename__}: {name}: {what}", got, want)
            if len(results) == 2:
                check(f"{name}: sa_accounts and the control agree",
                      results[Account], results[PlainAccount])

        for M, trigger in ((Account, True), (PlainAccount, False)):
            obs = run("raw stale writer", scenario_raw_stale_writer, M, trigger)
            for what, got, want in obs or []:
                check(f"{M.__tablename__}: raw stale writer: {what}", got, want)
    finally:
        Base.metadata.drop_all(engine)


if __name__ == "__main__":
    tap_checks.run(main)
