#!/usr/bin/python3
"""lockfence's lock_version_check trigger with both version protocols at once.

Plain psycopg2, no ORM.  One table, raw_counter, carries the trigger with
its default column lock_version.  Eight threads, each on its own
connection, increment one row's counter by read-modify-write until each has
20 successful commits:

  protocol 1 (four threads): send back the version read,
      UPDATE raw_counter SET n = <n+1>, lock_version = <v> WHERE id = 1
    the trigger stores v+1, or refuses with SQLSTATE 40001 when the row
    moved on since the read;
  protocol 2 (four threads): send the next version and guard on the old one,
      UPDATE raw_counter SET n = <n+1>, lock_version = <v+1>
        WHERE id = 1 AND lock_version = <v>
    as the ORMs do; a stale write matches no row.

Every refused or unmatched write is retried.  If no update is lost, the
final counter and the final version both equal the number of successful
commits.  A few single-connection checks on another row come first.

Connects through the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER);
the lockfence extension must already exist.  Prints one "ok - ..." or
"not ok - ..." line per check, "# " diagnostics, and a final
"done: <N> checks, <F> failed" line; exits 0 iff every check passed.
Waits are multiplied by LF_TIME_SCALE (default 1).
"""

import random
import threading
import time

import psycopg2
import psycopg2.errors

import tap_checks
from tap_checks import SCALE, check, out

PREFIX = "raw"
THREADS = 8
SUCCESSES = 20
STALE_MESSAGE = 'row in relation "raw_counter" was changed by another transaction'

tap_checks.prefix = PREFIX


def query(sql, args=None):
    """One row of a query, on a fresh autocommit connection."""
    conn = psycopg2.connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()
    finally:
        conn.close()


def attempt(conn, sql, args):
    """Run one UPDATE in conn's transaction: rowcount, or the SQLSTATE and message."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            n = cur.rowcount
        conn.commit()
        return n
    except psycopg2.Error as e:
        conn.rollback()
        return (e.pgcode, e.diag.message_primary)


PROTOCOL_1 = "UPDATE raw_counter SET n = %s, lock_version = %s WHERE id = %s"
PROTOCOL_2 = "UPDATE raw_counter SET n = %s, lock_version = %s WHERE id = %s AND lock_version = %s"


def setup():
    conn = psycopg2.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS raw_counter")
        cur.execute("CREATE TABLE raw_counter (id int PRIMARY KEY, n int NOT NULL,"
                    " lock_version int NOT NULL DEFAULT 0)")
        cur.execute("CREATE TRIGGER raw_counter_lock_version"
                    " BEFORE INSERT OR UPDATE ON raw_counter FOR EACH ROW"
                    " EXECUTE FUNCTION lockfence.lock_version_check()")
        cur.execute("INSERT INTO raw_counter (id, n) VALUES (1, 0), (2, 0)")
    conn.close()


def single_connection_checks():
    """Each protocol once, and a stale write, on row 2."""
    conn = psycopg2.connect()
    try:
        check("a new row starts at version 0", query("SELECT n, lock_version FROM raw_counter WHERE id = 2"), (0, 0))

        got = attempt(conn, PROTOCOL_1, (1, 0, 2))
        check("protocol 1: sending the version read (0) updates one row", got, 1)
        check("protocol 1: the trigger stores version 1",
              query("SELECT n, lock_version FROM raw_counter WHERE id = 2"), (1, 1))

        got = attempt(conn, PROTOCOL_2, (2, 2, 2, 1))
        check("protocol 2: sending the next version (2) guarded on 1 updates one row", got, 1)
        check("protocol 2: version 2 is stored as sent",
              query("SELECT n, lock_version FROM raw_counter WHERE id = 2"), (2, 2))

        got = attempt(conn, PROTOCOL_1, (99, 1, 2))
        check("protocol 1: a stale version (1, row has 2) is refused", got, ("40001", STALE_MESSAGE))
        got = attempt(conn, PROTOCOL_2, (99, 2, 2, 1))
        check("protocol 2: a stale guard (1, row has 2) matches no row", got, 0)
        check("the row is unchanged by both stale writes",
              query("SELECT n, lock_version FROM raw_counter WHERE id = 2"), (2, 2))
    finally:
        conn.close()


def concurrent_increments():
    lock = threading.Lock()
    tally = {
        "ok": [0] * THREADS,        # successes per thread
        "p1_40001": 0,              # protocol 1 refused by the trigger
        "p2_rowcount0": 0,          # protocol 2 guard matched no row
        "p2_40001": 0,              # protocol 2 refused by the trigger
        "messages": set(),          # primary messages of all 40001 errors
        "other": [],                # anything else
    }

    def worker(i, protocol):
        conn = None
        try:
            conn = psycopg2.connect()
            attempts = 0
            while tally["ok"][i] < SUCCESSES and attempts < 2000:
                attempts += 1
                with conn.cursor() as cur:
                    cur.execute("SELECT n, lock_version FROM raw_counter WHERE id = 1")
                    n, v = cur.fetchone()
                time.sleep(random.uniform(0, 0.003) * SCALE)
                if protocol == 1:
                    got = attempt(conn, PROTOCOL_1, (n + 1, v, 1))
                else:
                    got = attempt(conn, PROTOCOL_2, (n + 1, v + 1, 1, v))
                with lock:
                    if got == 1:
                        tally["ok"][i] += 1
                    elif protocol == 2 and got == 0:
                        tally["p2_rowcount0"] += 1
                    elif isinstance(got, tuple) and got[0] == "40001":
                        tally[f"p{protocol}_40001"] += 1
                        tally["messages"].add(got[1])
                    else:
                        tally["other"].append(f"protocol {protocol}: {got!r}")
        except Exception as e:
            with lock:
                tally["other"].append(f"protocol {protocol}: {type(e).__name__}: {e}".strip())
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=worker, args=(i, 1 if i % 2 == 0 else 2), daemon=True)
               for i in range(THREADS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20 * SCALE
    for t in threads:
        t.join(max(0, deadline - time.monotonic()))

    with lock:
        ok = list(tally["ok"])
        p1_40001, p2_rowcount0, p2_40001 = tally["p1_40001"], tally["p2_rowcount0"], tally["p2_40001"]
        messages, other = sorted(tally["messages"]), list(tally["other"])
    total = sum(ok)
    n, version = query("SELECT n, lock_version FROM raw_counter WHERE id = 1")
    out(f"# {total} commits; retries: protocol 1 {p1_40001} x 40001, "
        f"protocol 2 {p2_rowcount0} x no row + {p2_40001} x 40001")

    check("all threads finished", sum(t.is_alive() for t in threads), 0)
    check("every thread got its successes", ok, [SUCCESSES] * THREADS)
    check("final n equals the successful commits", n, total)
    check("final lock_version equals the successful commits", version, total)
    check("successful commits", total, THREADS * SUCCESSES)
    check("protocol 1 was refused with 40001 at least once", p1_40001 > 0, True)
    check("protocol 2 had to retry at least once (no row or 40001)", p2_rowcount0 + p2_40001 > 0, True)
    check("every 40001 carried the trigger's message", messages, [STALE_MESSAGE])
    check("no other errors", other[:3], [])


def main():
    setup()
    try:
        single_connection_checks()
        concurrent_increments()
    finally:
        conn = psycopg2.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS raw_counter")
        conn.close()


if __name__ == "__main__":
    tap_checks.run(main)
