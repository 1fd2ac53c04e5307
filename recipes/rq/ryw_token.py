"""RQ: a job reads what the request that enqueued it wrote, through `ryw proxy`.

The enqueuing code carries its connection's token (`SHOW ryw.token`) in the
job; the worker sets it (`ryw.token`) on its own connection before reading.
`conn` is a DB-API connection to the proxy (psycopg, Django's `connection`).

    db.commit()                                   # the write, committed first
    enqueue_after_write(queue, db, send_receipt, order_id)
    def send_receipt(order_id):                   # the job, in the worker
        read_after_enqueuer(worker_db)
        ...                                       # its reads see the order
"""
from rq import get_current_job


def enqueue_after_write(queue, conn, func, *args, **kwargs):
    with conn.cursor() as cursor:
        cursor.execute("SHOW ryw.token")
        token = cursor.fetchone()[0]
    return queue.enqueue(func, *args, meta={"ryw_token": token}, **kwargs)


def read_after_enqueuer(conn):
    job = get_current_job()
    if job is not None and (token := job.meta.get("ryw_token")):
        with conn.cursor() as cursor:
            cursor.execute("SELECT set_config('ryw.token', %s, false)", (token,))
