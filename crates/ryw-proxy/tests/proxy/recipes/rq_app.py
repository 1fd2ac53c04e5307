"""Background jobs on a real RQ queue (on the cluster's Redis) through ryw proxy.

    rq_app.py HOST PORT REDIS_URL with-token|without-token JOBS THINK_MS

Starts an RQ SimpleWorker in a child process (its own connection to the
proxy, autocommit), then, JOBS times: writes a row through the app's
connection (autocommit), enqueues a job that reads the row back, waits for
the job's result, and pauses THINK_MS. `with-token` enqueues with the recipe
(recipes/rq/ryw_token.py: SHOW ryw.token carried in the job's meta, set by
the job before it reads); `without-token` enqueues the same job plainly.
A job's read is stale when it returns less than the value written just
before the job was enqueued. Prints one JSON line.
"""
import json
import os
import subprocess
import sys
import time

import psycopg
from redis import Redis
from rq import Queue, SimpleWorker

from ryw_token import enqueue_after_write, read_after_enqueuer

SELECT = "SELECT coalesce((SELECT v FROM kv WHERE k = %s), 0), inet_server_port()"
UPSERT = "INSERT INTO kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"

_worker_db = None


def worker_db():
    """The worker's connection, made once (a worker process keeps its own)."""
    global _worker_db
    if _worker_db is None:
        _worker_db = psycopg.connect(os.environ["RYW_TEST_DSN"], autocommit=True)
    return _worker_db


def read_row(key):
    """The job: reads what the request wrote."""
    started = time.time()
    db = worker_db()
    read_after_enqueuer(db)
    value, server = db.execute(SELECT, (key,)).fetchone()
    return {"v": value, "port": server, "started": started}


def work(redis_url, queue_name, jobs):
    redis = Redis.from_url(redis_url)
    worker = SimpleWorker([Queue(queue_name, connection=redis)], connection=redis)
    worker.work(burst=False, max_jobs=jobs, logging_level="WARNING")


def main():
    host, port, redis_url, mode, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    think = int(sys.argv[6]) / 1000
    assert mode in ("with-token", "without-token"), mode
    dsn = f"host={host} port={port} user=postgres dbname=ryw"
    queue_name = f"ryw-{mode}"
    env = dict(os.environ, RYW_TEST_DSN=dsn)
    worker = subprocess.Popen([sys.executable, __file__, "worker", redis_url, queue_name, str(jobs + 1)], env=env)
    out = dict(jobs=0, stale=0, errors=[], ports={}, delay_ms=[])
    try:
        redis = Redis.from_url(redis_url)
        queue = Queue(queue_name, connection=redis)
        # The first job warms the worker up (its connection, its imports).
        first = queue.enqueue("rq_app.read_row", "nothing")
        if first.latest_result(timeout=30) is None:
            raise SystemExit("the worker did not run the first job in 30 s")
        with psycopg.connect(dsn, autocommit=True) as db:
            started = time.monotonic()
            for i in range(1, jobs + 1):
                key = f"job-{mode}-{i}"
                db.execute(UPSERT, (key, i))
                enqueued = time.time()
                if mode == "with-token":
                    job = enqueue_after_write(queue, db, "rq_app.read_row", key)
                else:
                    job = queue.enqueue("rq_app.read_row", key)
                result = job.latest_result(timeout=30)
                if result is None or result.type != result.Type.SUCCESSFUL:
                    out["errors"].append(f"job {i}: {result and result.exc_string}"[:300])
                    continue
                r = result.return_value
                out["jobs"] += 1
                out["stale"] += r["v"] < i
                out["ports"][str(r["port"])] = out["ports"].get(str(r["port"]), 0) + 1
                out["delay_ms"].append((r["started"] - enqueued) * 1000)
                time.sleep(think)
            out["seconds"] = round(time.monotonic() - started, 3)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # Every result is in; RQ's teardown can hang joining its pubsub
            # thread (seen once in CI): the worker is stopped below.
            pass
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=10)
    delays = sorted(out.pop("delay_ms"))
    out["job_start_ms_p50"] = round(delays[len(delays) // 2], 1) if delays else None
    out["job_start_ms_max"] = round(delays[-1], 1) if delays else None
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        work(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
