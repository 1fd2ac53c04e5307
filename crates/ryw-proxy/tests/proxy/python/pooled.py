"""Unchanged Python drivers through ryw proxy in transaction pooling mode,
with server-side prepared statements on: several client connections at once
share a pool of two server connections per node, so each client's
statements run on connections other clients used last.

- psycopg 3 with prepare_threshold=0 (every statement prepared on first
  use) and prepared_max=3 (so it sends DEALLOCATE name to evict), a rollback
  now and then (psycopg then sends DEALLOCATE ALL).
- asyncpg with its statement cache (named statements) on its own
  connections.

Each: write-then-read pairs judged by the values written, and a leader
statement that reports the server process it ran in (to count the server
connections a driver's statements ran on). Prints one JSON line.
"""
import asyncio
import json
import sys
import threading

import asyncpg
import psycopg

host, port, executions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CLIENTS = 4
DSN = dict(host=host, port=port, user="postgres", dbname="ryw")
UPSERT = "INSERT INTO kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
SELECT = "SELECT coalesce((SELECT v FROM kv WHERE k = %s), 0), inet_server_port()"
# pg_backend_pid() is node-local: the proxy runs it on the leader.
PID = "SELECT pg_backend_pid(), %s::int"
OTHERS = ["SELECT %s::int + 1", "SELECT %s::text || 'x'", "SELECT length(%s::text)"]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.executions, self.stale, self.errors, self.pids = 0, [], [], set()

    def out(self):
        return dict(executions=self.executions, stale=self.stale[:10], errors=self.errors[:10],
                    server_connections=len(self.pids))


def psycopg_client(t, n, per):
    row = f"pg3-pool-{n}"
    with psycopg.connect(**DSN, prepare_threshold=0) as conn:
        conn.prepared_max = 3
        for i in range(1, per + 1):
            try:
                conn.execute(UPSERT, (row, i))
                conn.commit()
                v, _ = conn.execute(SELECT, (row,)).fetchone()
                pid, _ = conn.execute(PID, (i,)).fetchone()
                conn.execute(OTHERS[i % 3], (i,)).fetchone()
                if i % 25 == 0:
                    conn.rollback()  # psycopg sends DEALLOCATE ALL
                else:
                    conn.commit()
                with t.lock:
                    t.executions += 4
                    t.pids.add(pid)
                    if v < i:
                        t.stale.append(f"{row}: wrote {i}, read {v}")
            except Exception as e:  # noqa: BLE001 - counted, and the test fails
                with t.lock:
                    t.errors.append(f"{row} #{i}: {type(e).__name__}: {e}"[:300])
                conn.rollback()


def psycopg_pooled():
    t = Tally()
    per = max(1, executions // (4 * CLIENTS)) + 1
    threads = [threading.Thread(target=psycopg_client, args=(t, n, per)) for n in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return t.out()


async def asyncpg_client(t, n, per):
    row = f"apg-pool-{n}"
    upsert = "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
    select = "SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0), inet_server_port()"
    c = await asyncpg.connect(host=host, port=port, user="postgres", database="ryw")
    try:
        stmt = await c.prepare(select)
        for i in range(1, per + 1):
            try:
                await c.execute(upsert, row, i)
                v = (await stmt.fetchrow(row))[0]
                pid = await c.fetchval("SELECT pg_backend_pid() + $1::int * 0", i)
                async with c.transaction():
                    await c.fetchval("SELECT $1::int + 1", i)
                t.executions += 4
                t.pids.add(pid)
                if v < i:
                    t.stale.append(f"{row}: wrote {i}, read {v}")
            except Exception as e:  # noqa: BLE001
                t.errors.append(f"{row} #{i}: {type(e).__name__}: {e}"[:300])
    finally:
        await c.close()


async def asyncpg_pooled():
    t = Tally()
    per = max(1, executions // (4 * CLIENTS)) + 1
    await asyncio.gather(*(asyncpg_client(t, n, per) for n in range(CLIENTS)))
    return t.out()


print(json.dumps({
    "psycopg": psycopg_pooled(),
    "asyncpg": asyncio.run(asyncpg_pooled()),
}))
