"""The check lines the ORM clients print for t/021_orm.pl.

One "ok - <prefix>: <label>" or "not ok - <prefix>: <label>" line per
check, "# " lines for diagnostics, and "done: <N> checks, <F> failed" last;
the exit status is 0 when every check passed.  Waits and timeouts are
multiplied by SCALE (LF_TIME_SCALE, stretched under make valgrind).
"""

import os
import sys
import threading
import traceback

SCALE = float(os.environ.get("LF_TIME_SCALE", "1"))

prefix = "client"
checks = 0
failures = 0


def out(line):
    print(line, flush=True)


def check(label, got, want):
    global checks, failures
    checks += 1
    if got == want:
        out(f"ok - {prefix}: {label}")
    else:
        failures += 1
        out(f"not ok - {prefix}: {label}")
        out(f"#   got:  {got!r}")
        out(f"#   want: {want!r}")


def fail(label, exc):
    """An unexpected exception: a failed check, with where it happened."""
    global checks, failures
    checks += 1
    failures += 1
    out(f"not ok - {prefix}: {label}: unexpected {type(exc).__name__}")
    script = os.path.abspath(sys.argv[0])
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == script:
            out(f"#   line {frame.lineno}, in {frame.name}: {frame.line}")
    for part in str(exc).rstrip("\n").split("\n"):
        out(f"#   {part}")


def finish():
    out(f"done: {checks} checks, {failures} failed")
    sys.stdout.flush()
    os._exit(0 if failures == 0 and checks > 0 else 1)


def watchdog():
    """For a threading.Timer: report a hung script and end it."""
    out(f"not ok - {prefix}: the script finished within {60 * SCALE:g} s")
    out(f"done: {checks + 1} checks, {failures + 1} failed")
    sys.stdout.flush()
    os._exit(1)


def run(main):
    """Run a client's main() under the watchdog; an exception is a failed
    check; then the done line and the exit status."""
    timer = threading.Timer(60 * SCALE, watchdog)
    timer.daemon = True
    timer.start()
    try:
        main()
    except Exception as e:
        fail("script", e)
    finish()
