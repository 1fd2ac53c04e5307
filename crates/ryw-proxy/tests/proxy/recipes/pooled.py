"""The pooled app's workload, shared by the Python recipe tests (the Node,
Java and Ruby apps run the same one).

A user writes a value through one request and reads it back through the
next, `pairs` times, thinking `think` seconds between pairs. The write's
request answers the user and only then ends and gives its connection back
to the pool, as a server finishes a request after sending its response; the
user's read arrives before that, so the pool hands it another connection. A
read is stale when it returns less than the value written just before
(judged by the values written, never by which node answered). A pair is
`crossed` when its two requests ran on different connections to the proxy
(the backend pid the proxy gave each client connection). Prints one JSON line.
"""
import json
import queue
import threading
import time

UPSERT = "INSERT INTO kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
SELECT = "SELECT coalesce((SELECT v FROM kv WHERE k = %s), 0), inet_server_port()"


def run(write, read, pairs, think, label, **extra):
    """write(key, value, answer, finish): the write's request, run on a
    thread of its own; it calls answer(pid) once the user has its answer,
    and ends (giving its connection back) only after finish.wait().
    read(key) -> (value, port, pid): the read's request."""
    out = dict(pairs=0, crossed=0, stale=0, stale_crossed=0, ports={}, errors=[])
    started = time.monotonic()
    for i in range(1, pairs + 1):
        answers, finish = queue.Queue(), threading.Event()

        def request(i=i, answers=answers, finish=finish):
            try:
                write(label, i, answers.put, finish)
            except Exception as e:  # noqa: BLE001 - handed to the user
                answers.put(e)

        writer = threading.Thread(target=request)
        writer.start()
        try:
            wrote_on = answers.get(timeout=10)
            if isinstance(wrote_on, Exception):
                raise wrote_on
            value, port, read_on = read(label)
        except Exception as e:  # noqa: BLE001 - reported, and the test fails
            out["errors"].append(f"{label} pair {i}: {type(e).__name__}: {e}"[:300])
            continue
        finally:
            finish.set()
            writer.join()
        crossed = wrote_on != read_on
        out["pairs"] += 1
        out["crossed"] += crossed
        if value < i:
            out["stale"] += 1
            out["stale_crossed"] += crossed
        out["ports"][str(port)] = out["ports"].get(str(port), 0) + 1
        time.sleep(think)
    out["seconds"] = round(time.monotonic() - started, 3)
    out.update(extra)
    print(json.dumps(out), flush=True)
