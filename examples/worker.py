#!/usr/bin/env python3
"""A worker that does its work under a lockfence lease, the way an
application should.

For each work item the worker

  1. takes the lease on 'queue:<queue>' with lockfence.acquire and a short
     timeout; when the lock stays busy (SQLSTATE 55P03) it backs off, with
     jitter, and tries again;
  2. keeps the lease alive from a background thread (lockfence.renew on a
     connection of its own, every third of the lease) while it works;
  3. reads the queue's counter, works, and writes the counter + 1 with its
     fence token, in one REPEATABLE READ transaction that also logs the item
     and bumps a total shared by all queues.  The fence-check trigger on the
     tables (examples/schema.sql) accepts the write only while the token
     holds the lease;
       - SQLSTATE 40001 (another worker's transaction changed the shared
         total first): roll back and retry the transaction;
       - SQLSTATE LF001 (the lease was lost, for instance while the worker
         was paused): stop.  The token is dead, and retrying the write with
         it could never succeed; the item is redone from scratch under a new
         lease, with a new token and a fresh read;
  4. releases the lease.

It prints a JSON summary on stdout and a log on stderr.  Exit status: 0 when
all items were done, 2 when it gave up waiting for the lock, 1 on any other
error.

Usage: worker.py --dsn 'host=... dbname=...' --queue alpha --items 5
See examples/README.md.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import psycopg2

LOCK_BUSY = "55P03"          # lock_not_available: acquire timed out
SERIALIZATION = "40001"      # serialization_failure: retry the transaction
DEADLOCK = "40P01"           # deadlock_detected: retry the transaction
FENCED = "LF001"             # lockfence: stale token, the lease is lost


class LeaseLost(Exception):
    """The lease is gone: the token must never be used again."""


class GaveUp(Exception):
    """The lock stayed busy for longer than --give-up."""


class Log:
    def __init__(self, name):
        self.name = name
        self.t0 = time.monotonic()

    def __call__(self, msg):
        print(f"[{self.name} +{time.monotonic() - self.t0:7.3f}s] {msg}",
              file=sys.stderr, flush=True)


class Renewer(threading.Thread):
    """Renews a lease every third of its length, on a connection of its own
    (a psycopg2 connection must not be used by two threads at once), until
    stopped.  Sets `lost` when a renewal fails: from then on the main
    thread must not count on the lease."""

    def __init__(self, conn, lock, token, lease, log):
        super().__init__(daemon=True)
        self.conn = conn
        self.lock, self.token, self.lease, self.log = lock, token, lease, log
        self.stop_event = threading.Event()
        self.lost = threading.Event()
        self.renewals = 0

    def run(self):
        while not self.stop_event.wait(self.lease / 3):
            try:
                with self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT lockfence.renew(%s, %s, %s * interval '1 second')",
                        (self.lock, self.token, self.lease))
                    ok = cur.fetchone()[0]
            except psycopg2.Error as e:
                # cannot tell whether the lease still holds: assume not
                self.log(f"renew failed ({e.pgcode}: {e}); treating the lease as lost")
                ok = False
            if not ok:
                self.log(f"renew: token {self.token} no longer holds {self.lock}")
                self.lost.set()
                return
            self.renewals += 1

    def stop(self):
        self.stop_event.set()
        self.join()


class Worker:
    def __init__(self, args):
        self.args = args
        self.name = args.name
        self.lock = f"queue:{args.queue}"
        self.log = Log(self.name)
        self.conn = psycopg2.connect(args.dsn, application_name=self.name)
        # Leases are not transactional: take and release them outside any
        # transaction, and open transactions explicitly for the writes.
        self.conn.autocommit = True
        self.renew_conn = psycopg2.connect(args.dsn, application_name=f"{self.name}-renewer")
        self.renew_conn.autocommit = True
        self.stats = {"worker": self.name, "queue": args.queue, "done": 0,
                      "lost": 0, "busy_retries": 0, "serialization_retries": 0,
                      "renewals": 0, "tokens": []}
        self.attempt = 0

    # -- the lease --

    def acquire(self):
        """Take the lease; back off and retry while the lock is busy."""
        deadline = time.monotonic() + self.args.give_up
        backoff = self.args.backoff
        while True:
            try:
                with self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT lockfence.acquire(%s, lease => %s * interval '1 second',"
                        " timeout => %s * interval '1 second')",
                        (self.lock, self.args.lease, self.args.acquire_timeout))
                    token = cur.fetchone()[0]
                self.log(f"acquired {self.lock}, token {token}")
                return token
            except psycopg2.Error as e:
                if e.pgcode != LOCK_BUSY:
                    raise
            self.stats["busy_retries"] += 1
            if time.monotonic() + backoff > deadline:
                raise GaveUp(f"{self.lock} stayed busy for {self.args.give_up} s")
            delay = backoff * random.uniform(0.5, 1.5)
            self.log(f"{self.lock} busy (55P03); backing off {delay * 1000:.0f} ms")
            time.sleep(delay)
            backoff = min(backoff * 2, 1.0)

    def release(self, token):
        with self.conn.cursor() as cur:
            cur.execute("SELECT lockfence.release(%s, %s)", (self.lock, token))
            released = cur.fetchone()[0]
        if released:
            self.log(f"released {self.lock}")
        else:
            self.log(f"release: token {token} no longer held {self.lock}")

    # -- one work item --

    def read_counter(self, token):
        with self.conn.cursor() as cur:
            cur.execute("SELECT done FROM queues WHERE name = %s", (self.args.queue,))
            row = cur.fetchone()
            if row is not None:
                return row[0]
            # first use of this queue: create its row, under the lease
            cur.execute(
                "INSERT INTO queues (name, done, fence_token) VALUES (%s, 0, %s)"
                " ON CONFLICT (name) DO NOTHING", (self.args.queue, token))
            return 0

    def work(self, renewer):
        """The work itself, in steps; stop as soon as the lease is lost."""
        for _ in range(self.args.steps):
            if renewer.lost.is_set():
                raise LeaseLost("the renewal failed during the work")
            time.sleep(self.args.work / self.args.steps)

    def write(self, token, seen):
        """Write the result with the token; retry on 40001, stop on LF001."""
        for attempt in range(1, self.args.max_txn_retries + 1):
            try:
                with self.conn.cursor() as cur:
                    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                    cur.execute(
                        "UPDATE queues SET done = %s, fence_token = %s WHERE name = %s",
                        (seen + 1, token, self.args.queue))
                    cur.execute(
                        "INSERT INTO work_log (queue, item, worker, fence_token)"
                        " VALUES (%s, %s, %s, %s)",
                        (self.args.queue, seen + 1, self.name, token))
                    cur.execute("UPDATE totals SET done = done + 1 WHERE id = 1")
                    cur.execute("COMMIT")
                return
            except psycopg2.Error as e:
                self.rollback()
                if e.pgcode == FENCED:
                    self.log(f"write rejected with LF001: {e.diag.message_primary}; "
                             f"{e.diag.message_detail}")
                    raise LeaseLost("the fence trigger rejected the token") from e
                if e.pgcode not in (SERIALIZATION, DEADLOCK):
                    raise
                self.stats["serialization_retries"] += 1
                self.log(f"write: {e.pgcode} ({e.diag.message_primary}); "
                         f"retrying the transaction (try {attempt + 1})")
                time.sleep(random.uniform(0, 0.02 * attempt))
        raise RuntimeError(f"the write failed {self.args.max_txn_retries} times with 40001")

    def rollback(self):
        try:
            with self.conn.cursor() as cur:
                cur.execute("ROLLBACK")
        except psycopg2.Error:
            pass

    def pause_if_asked(self, renewer):
        """Simulate a stop-the-world pause (GC, swap, VM migration) between
        the decision and the write: the whole process stops, renewal thread
        included, and the write goes out right after."""
        if self.attempt != self.args.pause_at_item or self.args.pause <= 0:
            return
        self.log(f"pausing for {self.args.pause} s (a stop-the-world pause; "
                 f"the lease is {self.args.lease} s)")
        renewer.stop()
        time.sleep(self.args.pause)
        self.log("resuming, and writing right away")

    def do_item(self):
        self.attempt += 1
        token = self.acquire()
        self.stats["tokens"].append(token)
        renewer = Renewer(self.renew_conn, self.lock, token, self.args.lease, self.log)
        renewer.start()
        try:
            seen = self.read_counter(token)
            self.work(renewer)
            self.pause_if_asked(renewer)
            self.write(token, seen)
            self.stats["done"] += 1
            self.log(f"item done: {self.args.queue} = {seen + 1}, token {token}")
        except LeaseLost as e:
            # Stop this item: no retry of the write with the same token.
            self.stats["lost"] += 1
            self.log(f"lost the lease ({e}); the item will be redone under a new lease")
        finally:
            renewer.stop()
            self.stats["renewals"] += renewer.renewals
            try:
                self.release(token)
            except psycopg2.Error as e:
                # Do not hide an error that brought us here; the lease runs
                # out by itself, and a broken connection fails the next
                # acquire anyway.
                self.log(f"release failed ({e.pgcode}: {e})")

    def run(self):
        while self.stats["done"] < self.args.items:
            if self.attempt >= self.args.items + self.args.max_lost:
                raise RuntimeError("lost the lease too often")
            self.do_item()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True, help="libpq connection string")
    p.add_argument("--name", default=f"worker-{os.getpid()}",
                   help="worker name (application_name, log prefix)")
    p.add_argument("--queue", default="default", help="lock 'queue:<queue>' and its row")
    p.add_argument("--items", type=int, default=5, help="work items to do")
    p.add_argument("--lease", type=float, default=2.0, help="lease, seconds")
    p.add_argument("--acquire-timeout", type=float, default=0.5,
                   help="longest wait in one acquire, seconds (then 55P03)")
    p.add_argument("--backoff", type=float, default=0.05,
                   help="first back-off after 55P03, seconds (doubles, up to 1 s)")
    p.add_argument("--give-up", type=float, default=30.0,
                   help="stop trying to get the lock after this many seconds")
    p.add_argument("--work", type=float, default=0.05, help="work per item, seconds")
    p.add_argument("--steps", type=int, default=5, help="work steps per item")
    p.add_argument("--max-txn-retries", type=int, default=20,
                   help="tries of one write transaction on 40001")
    p.add_argument("--max-lost", type=int, default=5,
                   help="items that may be redone after losing the lease")
    p.add_argument("--pause-at-item", type=int, default=0,
                   help="simulate a pause before the write of this attempt (1-based)")
    p.add_argument("--pause", type=float, default=0.0, help="length of that pause, seconds")
    args = p.parse_args(argv)
    if args.items < 0 or args.steps < 1 or args.lease <= 0 or args.max_txn_retries < 1:
        p.error("--items must be >= 0, --steps and --max-txn-retries >= 1, --lease > 0")
    return args


def main(argv):
    args = parse_args(argv)
    worker = Worker(args)
    status = 0
    try:
        worker.run()
    except GaveUp as e:
        worker.log(f"giving up: {e}")
        status = 2
    except Exception as e:  # noqa: BLE001 - report, then fail
        worker.log(f"error: {type(e).__name__}: {e}")
        status = 1
    finally:
        worker.conn.close()
        worker.renew_conn.close()
    worker.stats["status"] = status
    print(json.dumps(worker.stats), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
