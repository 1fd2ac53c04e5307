"""Write-then-read pairs through ryw proxy with psycopg 3 (libpq underneath).

The write goes through one connection, the read through another bound to the
same ryw.session; psycopg prepares a statement server-side after 5 executions
(prepare_threshold=5), so the later reads Bind a named statement that the proxy
must prepare on whichever node serves them. Prints one JSON line.
"""
import json
import sys

import psycopg

host, port, session, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
opts = dict(host=host, port=port, user="postgres", dbname="ryw",
            options=f"-c ryw.session={session}", autocommit=True, prepare_threshold=5)
with psycopg.connect(**opts) as w, psycopg.connect(**opts) as r:
    r.execute("SET ryw.strategy = 'causal'")
    strategy = r.execute("SHOW ryw.strategy").fetchone()[0]
    stale, ports = 0, {}
    for i in range(1, pairs + 1):
        w.execute("INSERT INTO kv (k, v) VALUES (%s, %s) "
                  "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", (session, i))
        v, server = r.execute(
            "SELECT coalesce((SELECT v FROM kv WHERE k = %s), 0), inet_server_port()",
            (session,)).fetchone()
        if v < i:
            stale += 1
        ports[str(server)] = ports.get(str(server), 0) + 1
    token = r.execute("SHOW ryw.token").fetchone()[0]
    print(json.dumps({"pairs": pairs, "stale": stale, "ports": ports,
                      "strategy": strategy, "token": token}))
