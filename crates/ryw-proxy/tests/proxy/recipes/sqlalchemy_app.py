"""A SQLAlchemy app on its QueuePool (3 connections) through ryw proxy;
each request is `with engine.connect()`. The workload is pooled.py's.

    sqlalchemy_app.py HOST PORT bound|control PAIRS THINK_MS

The engine runs in AUTOCOMMIT, so that reads may leave the leader (inside a
transaction the proxy sends everything to the leader). `bound` installs the
recipe (recipes/sqlalchemy/ryw_checkout.py) and sets the request's session;
it also runs a few pairs on an engine with SQLAlchemy's default (a
transaction opened implicitly), where the binding runs inside that
transaction (`implicit` in the report).
"""
import sys
import threading

import sqlalchemy as sa

import pooled
from ryw_checkout import bind_ryw_sessions, ryw_session

host, port, mode, pairs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
think = int(sys.argv[5]) / 1000
assert mode in ("bound", "control"), mode
url = f"postgresql+psycopg://postgres@{host}:{port}/ryw"
upsert = sa.text("INSERT INTO kv (k, v) VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
select = sa.text("SELECT coalesce((SELECT v FROM kv WHERE k = :k), 0), inet_server_port()")


def app(engine):
    def request(user):
        """A request's connection; the user (None: anonymous) set first, as
        a web framework's middleware would set it."""
        ryw_session.set(None if user is None else f"user-{user}")
        return engine.connect()

    def pid(c):
        return c.connection.dbapi_connection.info.backend_pid

    def write(k, v, answer, finish):
        with request(1) as c:
            c.execute(upsert, {"k": k, "v": v})
            c.commit()
            answer(pid(c))
            finish.wait()

    def read(k):
        with request(1) as c:
            v, server = c.execute(select, {"k": k}).one()
            return v, server, pid(c)

    def session(user):
        with request(user) as c:
            return c.exec_driver_sql("SHOW ryw.session").scalar()

    return write, read, session


def implicit():
    """SQLAlchemy's default: the checkout binds inside the transaction psycopg
    opens; the pool's rollback at checkin undoes it, the next checkout binds again."""
    engine = sa.create_engine(url, pool_size=3, max_overflow=0)
    bind_ryw_sessions(engine)
    write, read, _ = app(engine)
    at_once = threading.Event()
    at_once.set()
    stale, errors = 0, []
    for i in range(1, 21):
        try:
            write("sqlalchemy-implicit", i, lambda pid: None, at_once)
            if read("sqlalchemy-implicit")[0] < i:
                stale += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}"[:300])
    engine.dispose()
    return {"pairs": 20, "stale": stale, "errors": errors}


engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=3, max_overflow=0)
if mode == "bound":
    bind_ryw_sessions(engine)
extra = {"implicit": implicit()} if mode == "bound" else {}
write, read, session = app(engine)
# The session each kind of request runs in: the user's, and none for an
# anonymous one.
extra["sessions"] = {"user": session(1), "anonymous": session(None)}
pooled.run(write, read, pairs, think, f"sqlalchemy-{mode}", **extra)
