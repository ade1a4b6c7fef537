"""Clients that contend for one lease through pgbouncer, for t/022_pooler_queue.pl.

N client processes (psycopg 3, autocommit, extended query protocol with
unnamed statements, as an application behind a transaction pooler runs)
loop for the given seconds:

    acquire('ctr', lease, timeout)     through the wait pool
    SELECT v FROM ctr                  through the work pool
    fenced UPDATE ctr SET v = v_read + 1, fence_token = token
    release('ctr', token)

Every --pause-every'th turn of each client sleeps 1.5 leases after
acquiring, as a paused process would: its write must be rejected (LF001)
and its release must answer false.  No client ever retries: an error other
than LF001 is a failure.  Each turn's history goes to the parent, which
checks it and prints the check lines of tap_checks.py:

  - no errors (no 55P03 from a wait through the pooler, nothing else);
  - every write of a live holder accepted, every paused holder's rejected;
  - mutual exclusion: sorted by token, the accepted writes wrote 1, 2, 3,
    ..., and the row holds their number (no lost update);
  - FIFO: no turn that reached the server at least 2 ms after another got
    an earlier token (statement_timestamp() of the acquire is its arrival);
  - with --expect-exhaustion, that the pool did run out: some live holders
    could not write before their lease ended (leases bound that wait).
"""

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "orm"))
import tap_checks  # noqa: E402
from tap_checks import SCALE, check, out  # noqa: E402

import psycopg  # noqa: E402


def client(n, args, results):
    try:
        client_turns(n, args, results)
    except Exception as e:  # could not even connect
        results.put({"client": n, "turn": 0, "paused": False,
                     "error": f"{type(e).__name__}: {e}"})
    finally:
        results.put(None)


def client_turns(n, args, results):
    lease = args.lease_ms * SCALE / 1000.0
    timeout = args.timeout_ms * SCALE / 1000.0
    # psycopg 3 sends every query with the extended protocol and an unnamed
    # statement; from its 5th run on it would prepare a named one, which
    # pgbouncer before 1.21 cannot keep apart between clients
    wait_conn = psycopg.connect(args.wait_dsn, autocommit=True, prepare_threshold=None)
    conn = psycopg.connect(args.dsn, autocommit=True, prepare_threshold=None)
    deadline = time.time() + args.seconds * SCALE
    turn = 0
    while time.time() < deadline:
        turn += 1
        rec = {"client": n, "turn": turn, "paused": False, "error": None}
        try:
            tok, arrived, granted, pid = wait_conn.execute(
                "SELECT lockfence.acquire('ctr', make_interval(secs => %s),"
                " make_interval(secs => %s)),"
                " extract(epoch FROM statement_timestamp())::float8,"
                " extract(epoch FROM clock_timestamp())::float8,"
                " pg_backend_pid()",
                (lease, timeout)).fetchone()
            rec.update(token=tok, arrived=arrived, granted=granted, pid=pid)
            if args.pause_every and turn % args.pause_every == 0:
                rec["paused"] = True
                time.sleep(1.5 * lease)
            v = conn.execute("SELECT v FROM ctr WHERE id = 1").fetchone()[0]
            try:
                conn.execute("UPDATE ctr SET v = %s, fence_token = %s WHERE id = 1",
                             (v + 1, tok))
                rec.update(accepted=True, wrote=v + 1)
            except psycopg.Error as e:
                if e.sqlstate != "LF001":
                    raise
                rec.update(accepted=False)
            rec["released"] = conn.execute(
                "SELECT lockfence.release('ctr', %s)", (tok,)).fetchone()[0]
        except psycopg.Error as e:
            rec["error"] = f"{e.sqlstate}: {str(e).splitlines()[0]}"
        results.put(rec)
        if rec["error"]:
            break
    wait_conn.close()
    conn.close()


def fifo_inversions(recs, margin_s=0.002):
    """Pairs where a turn that arrived margin_s or more later got the lock
    first: arrival order, then the largest token among those that arrived
    margin_s before each turn.  A server connection's first acquire reads
    the database's token record before it queues, which no margin bounds
    under valgrind: such a turn is not held against the turns after it."""
    by_arrival = sorted(recs, key=lambda r: r["arrived"])
    first_on_backend = set()
    seen_pids = set()
    for r in by_arrival:
        if r["pid"] not in seen_pids:
            seen_pids.add(r["pid"])
            first_on_backend.add((r["client"], r["turn"]))
    bad = []
    j = 0
    best = None
    for r in by_arrival:
        while j < len(by_arrival) and by_arrival[j]["arrived"] + margin_s <= r["arrived"]:
            c = by_arrival[j]
            if (c["client"], c["turn"]) not in first_on_backend and \
                    (best is None or c["token"] > best["token"]):
                best = c
            j += 1
        if best is not None and best["token"] > r["token"]:
            bad.append((best["client"], best["turn"], r["client"], r["turn"]))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--wait-dsn", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--lease-ms", type=float, default=300)
    ap.add_argument("--timeout-ms", type=float, default=20000)
    ap.add_argument("--pause-every", type=int, default=0)
    ap.add_argument("--expect-exhaustion", action="store_true")
    args = ap.parse_args()
    tap_checks.prefix = args.label

    with psycopg.connect(args.dsn, autocommit=True) as c:
        start_v = c.execute("SELECT v FROM ctr WHERE id = 1").fetchone()[0]

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=client, args=(n, args, results))
             for n in range(args.clients)]
    for p in procs:
        p.start()
    recs = []
    running = len(procs)
    while running:
        r = results.get()
        if r is None:
            running -= 1
        else:
            recs.append(r)
    for p in procs:
        p.join()

    errors = [f"client {r['client']} turn {r['turn']}: {r['error']}"
              for r in recs if r["error"]]
    check("no client saw an error (no 55P03, no retry)", errors, [])
    done = [r for r in recs if not r["error"]]
    per_client = [sum(1 for r in done if r["client"] == n) for n in range(args.clients)]
    out(f"# turns per client: {per_client}")
    check("every client took the lock at least 3 times",
          all(k >= 3 for k in per_client), True)

    paused = [r for r in done if r["paused"]]
    live = [r for r in done if not r["paused"]]
    check("every paused holder's write was rejected and its release was false",
          [(r["client"], r["turn"]) for r in paused if r["accepted"] or r["released"]], [])
    lost = [r for r in live if not r["accepted"]]
    out(f"# turns: {len(done)}, paused: {len(paused)}, live holders that lost the lease: {len(lost)}")
    if args.expect_exhaustion:
        check("the pool ran out: live holders lost their lease waiting for a server connection",
              len(lost) > 0, True)
        check("and then their release was false too",
              [(r["client"], r["turn"]) for r in lost if r["released"]], [])
    else:
        check("every live holder's write was accepted and its release true",
              [(r["client"], r["turn"]) for r in live if not (r["accepted"] and r["released"])], [])

    accepted = sorted((r for r in done if r["accepted"]), key=lambda r: r["token"])
    check("in token order the accepted writes wrote the next value each (mutual exclusion)",
          [r["wrote"] for r in accepted],
          list(range(start_v + 1, start_v + 1 + len(accepted))))
    with psycopg.connect(args.dsn, autocommit=True) as c:
        final_v = c.execute("SELECT v FROM ctr WHERE id = 1").fetchone()[0]
    check("the counter holds every accepted write and nothing else (no lost update)",
          final_v, start_v + len(accepted))
    check("tokens are distinct", len({r["token"] for r in done}), len(done))
    # the margin covers a request's work between its arrival and the queue
    # (parse, plan, and at a connection's first grant the read of the
    # database's token record), which valgrind stretches like everything
    check("FIFO: no turn got the lock before one that reached the server %g ms earlier"
          % (2 * SCALE),
          fifo_inversions(done, 0.002 * SCALE)[:5], [])


tap_checks.run(main)
