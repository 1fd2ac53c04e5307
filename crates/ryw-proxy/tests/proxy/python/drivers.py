"""Unchanged Python drivers through ryw proxy, with their defaults.

- psycopg 3: transactions opened implicitly, statements auto-prepared after 5
  executions (prepare_threshold=5), so every rollback makes it send
  DEALLOCATE ALL by itself; a pipeline() block (libpq ends it with Sync and
  Flush); two connections bound to one session with set_config inside the
  implicit transaction.
- SQLAlchemy 2 on psycopg: its pool (a rollback on every checkin).
- asyncpg: its default pool (every release resets the connection with
  SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;),
  prepare() then execute (Parse/Describe/Flush, then more), copy_records_to_table,
  add_listener (a notification while the connection is idle).

Staleness is judged by the values written. After each driver's run, reads
of an old row on the same connection (autocommit) show whether anything
pinned it to the leader for good. Prints one JSON line.
"""
import asyncio
import json
import sys
import time

import asyncpg
import psycopg
import sqlalchemy as sa

host, port, leader_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PAIRS = int(sys.argv[4]) if len(sys.argv) > 4 else 60
DSN = dict(host=host, port=port, user="postgres", dbname="ryw")
UPSERT = "INSERT INTO kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
SELECT = "SELECT coalesce((SELECT v FROM kv WHERE k = %s), 0), inet_server_port()"


class Tally:
    def __init__(self):
        self.pairs, self.stale, self.errors, self.followers, self.extra = 0, [], [], 0, {}

    def check(self, what, wrote, read):
        self.pairs += 1
        if read < wrote:
            self.stale.append(f"{what}: wrote {wrote}, read {read}")

    def error(self, what, e):
        self.errors.append(f"{what}: {type(e).__name__}: {e}"[:300])

    def out(self):
        return dict(pairs=self.pairs, stale=self.stale, errors=self.errors,
                    followers=self.followers, **self.extra)


def psycopg_defaults():
    t = Tally()
    with psycopg.connect(**DSN) as conn:
        for i in range(1, PAIRS + 1):
            try:
                conn.execute(UPSERT, ("pg3", i))
                conn.commit()
                if i % 10 == 0:
                    # A transaction that rolls back: psycopg then sends
                    # DEALLOCATE ALL, having auto-prepared statements.
                    conn.execute(SELECT, ("pg3",))
                    conn.rollback()
                v, _ = conn.execute(SELECT, ("pg3",)).fetchone()
                conn.commit()
                t.check("pg3", i, v)
            except Exception as e:  # noqa: BLE001 - counted, and the test fails
                t.error(f"pair {i}", e)
                conn.rollback()
        try:
            with conn.pipeline():
                for i in range(PAIRS + 1, PAIRS + 21):
                    conn.execute(UPSERT, ("pg3", i))
                conn.commit()
            v, _ = conn.execute(SELECT, ("pg3",)).fetchone()
            conn.commit()
            t.check("pg3 after a pipeline", PAIRS + 20, v)
            conn.execute("SELECT 1")  # a query after the pipeline's Sync, Flush
            conn.commit()
        except Exception as e:  # noqa: BLE001
            t.error("pipeline", e)
        conn.autocommit = True
        time.sleep(1)
        t.followers = sum(conn.execute(SELECT, ("old",)).fetchone()[1] != leader_port
                          for _ in range(20))
    # Two connections, one session, bound inside the implicit transaction.
    with psycopg.connect(**DSN) as w, psycopg.connect(**DSN) as r:
        for c in (w, r):
            c.execute("SELECT set_config('ryw.session', %s, false)", ("pg3-across",))
            c.commit()
        for i in range(1, PAIRS + 1):
            try:
                w.execute(UPSERT, ("pg3-across", i))
                w.commit()
                v, _ = r.execute(SELECT, ("pg3-across",)).fetchone()
                r.commit()
                t.check("pg3 across", i, v)
            except Exception as e:  # noqa: BLE001
                t.error(f"across {i}", e)
                w.rollback()
                r.rollback()
    return t.out()


def sqlalchemy_pool():
    t = Tally()
    engine = sa.create_engine(f"postgresql+psycopg://postgres@{host}:{port}/ryw",
                              pool_size=2, max_overflow=0)
    upsert = sa.text("INSERT INTO kv (k, v) VALUES (:k, :v) "
                     "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
    select = sa.text("SELECT coalesce((SELECT v FROM kv WHERE k = :k), 0), inet_server_port()")
    bind = sa.text("SELECT set_config('ryw.session', :s, false)")
    for i in range(1, PAIRS + 1):
        try:
            with engine.connect() as c:
                c.execute(upsert, {"k": "sa", "v": i})
                c.commit()
                v = c.execute(select, {"k": "sa"}).first()[0]
                t.check("sqlalchemy", i, v)
                if i % 7 == 0:
                    c.rollback()
        except Exception as e:  # noqa: BLE001
            t.error(f"pair {i}", e)
    for i in range(1, PAIRS + 1):
        try:
            with engine.connect() as w, engine.connect() as r:
                w.execute(bind, {"s": "sa-across"})
                r.execute(bind, {"s": "sa-across"})
                w.execute(upsert, {"k": "sa-across", "v": i})
                w.commit()
                v = r.execute(select, {"k": "sa-across"}).first()[0]
                r.commit()
                t.check("sqlalchemy across", i, v)
        except Exception as e:  # noqa: BLE001
            t.error(f"across {i}", e)
    time.sleep(1)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        t.followers = sum(c.execute(select, {"k": "old"}).first()[1] != leader_port
                          for _ in range(20))
    engine.dispose()
    return t.out()


async def asyncpg_pool():
    t = Tally()
    upsert = "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
    select = "SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0), inet_server_port()"
    pool = await asyncpg.create_pool(host=host, port=port, user="postgres", database="ryw",
                                     min_size=2, max_size=2)
    for i in range(1, PAIRS + 1):
        try:
            async with pool.acquire() as c:
                await c.execute(upsert, "apg", i)
                v = (await c.fetchrow(select, "apg"))[0]
                t.check("asyncpg", i, v)
        except Exception as e:  # noqa: BLE001
            t.error(f"pair {i}", e)
    try:
        async with pool.acquire() as c:
            stmt = await c.prepare(select)
            for i in range(1, PAIRS + 1):
                await c.execute(upsert, "apg-prepared", i)
                v = (await stmt.fetchrow("apg-prepared"))[0]
                t.check("asyncpg prepared", i, v)
    except Exception as e:  # noqa: BLE001
        t.error("prepare/execute", e)
    try:
        async with pool.acquire() as c:
            await c.execute("DELETE FROM kv WHERE k LIKE 'copy-%'")
            await c.copy_records_to_table("kv", records=[(f"copy-{i}", i) for i in range(100)])
            t.extra["copied"] = await c.fetchval("SELECT count(*) FROM kv WHERE k LIKE 'copy-%'")
    except Exception as e:  # noqa: BLE001
        t.error("copy_records_to_table", e)
    try:
        async with pool.acquire() as listener, pool.acquire() as sender:
            got = asyncio.Queue()
            await listener.add_listener("ryw_ch", lambda *_: got.put_nowait(time.monotonic()))
            delays = []
            for _ in range(5):
                sent = time.monotonic()
                await sender.execute("NOTIFY ryw_ch, 'x'")
                delays.append(await asyncio.wait_for(got.get(), 5) - sent)
            t.extra["notify_ms"] = max(delays) * 1000
            await listener.remove_listener("ryw_ch", lambda *_: None)
    except Exception as e:  # noqa: BLE001
        t.error("add_listener", e)
    try:
        w = await asyncpg.connect(host=host, port=port, user="postgres", database="ryw")
        r = await asyncpg.connect(host=host, port=port, user="postgres", database="ryw")
        for c in (w, r):
            await c.fetchval("SELECT set_config('ryw.session', $1, false)", "apg-across")
        for i in range(1, PAIRS + 1):
            await w.execute(upsert, "apg-across", i)
            v = (await r.fetchrow(select, "apg-across"))[0]
            t.check("asyncpg across", i, v)
        await w.close()
        await r.close()
    except Exception as e:  # noqa: BLE001
        t.error("across", e)
    await asyncio.sleep(1)
    async with pool.acquire() as c:
        ports = [(await c.fetchrow(select, "old"))[1] for _ in range(20)]
        t.followers = sum(p != leader_port for p in ports)
    await pool.close()
    return t.out()


print(json.dumps({
    "psycopg": psycopg_defaults(),
    "sqlalchemy": sqlalchemy_pool(),
    "asyncpg": asyncio.run(asyncpg_pool()),
}))
