# The timed client of the scale section (bench/run.sh scale): one
# connection, a prepared grant + release of its own lock, each call timed by
# the client, for SECONDS.  Prints: calls, median, p99 and maximum in ms.
#
#   python3 victim.py HOST PORT SECONDS
import sys
import time

import psycopg2

host, port, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = psycopg2.connect(host=host, port=port, dbname="postgres", user="victim")
conn.autocommit = True
cur = conn.cursor()
cur.execute("PREPARE victim AS SELECT public.grant_release('victim:1')")
latencies = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.perf_counter()
    cur.execute("EXECUTE victim")
    latencies.append(time.perf_counter() - t0)
latencies.sort()
n = len(latencies)
print(n, "%.3f %.3f %.3f" % (latencies[n // 2] * 1000, latencies[int(n * 0.99)] * 1000,
                             latencies[-1] * 1000))
