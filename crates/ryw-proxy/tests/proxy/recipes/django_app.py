"""A Django app on Django's connection pool (psycopg's, 3 connections)
through ryw proxy, its requests served through its WSGI handler as a
threaded WSGI server serves them (each request takes a connection from the
pool at its first query and gives it back when its response is closed).
The workload is pooled.py's.

    django_app.py HOST PORT bound|control PAIRS THINK_MS

`bound` installs the recipe (recipes/django/ryw_middleware.py) after a
stand-in for AuthenticationMiddleware; `control` leaves it out.
"""
import io
import json
import sys
from types import SimpleNamespace

import django
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.urls import path

import pooled

host, port, mode, pairs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
think = int(sys.argv[5]) / 1000
assert mode in ("bound", "control"), mode
ANONYMOUS = SimpleNamespace(pk=None, is_authenticated=False)


def authenticate(get_response):
    """Stands in for AuthenticationMiddleware: the user named by X-User."""
    def middleware(request):
        user = request.headers.get("X-User")
        request.user = SimpleNamespace(pk=user, is_authenticated=True) if user else ANONYMOUS
        return get_response(request)
    return middleware


def backend_pid():
    return connection.connection.info.backend_pid


def write(request):
    with connection.cursor() as c:
        c.execute(pooled.UPSERT, [request.GET["k"], int(request.GET["v"])])
    return JsonResponse({"pid": backend_pid()})


def read(request):
    with connection.cursor() as c:
        c.execute(pooled.SELECT, [request.GET["k"]])
        v, server = c.fetchone()
    return JsonResponse({"v": v, "port": server, "pid": backend_pid()})


def session(request):
    with connection.cursor() as c:
        c.execute("SHOW ryw.session")
        return JsonResponse({"session": c.fetchone()[0]})


urlpatterns = [path("write", write), path("read", read), path("session", session)]

settings.configure(
    SECRET_KEY="ryw-recipes-test",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["__main__.authenticate"] + (["ryw_middleware.ryw_session"] if mode == "bound" else []),
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": host, "PORT": port, "NAME": "ryw", "USER": "postgres",
        "OPTIONS": {"pool": {"min_size": 3, "max_size": 3, "timeout": 10}},
    }},
    USE_TZ=True,
)
django.setup()
from django.core.wsgi import get_wsgi_application  # noqa: E402 - after setup

app = get_wsgi_application()


def environ(method, route, query, user):
    env = {
        "REQUEST_METHOD": method, "PATH_INFO": route, "QUERY_STRING": query,
        "SERVER_NAME": "app", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http", "CONTENT_LENGTH": "0",
    }
    if user is not None:
        env["HTTP_X_USER"] = user
    return env


def serve(method, route, query, sent=lambda body: None, done=lambda: None, user="1"):
    """Serves one request as a WSGI server does: sends the body, then closes
    the response, which ends the request (request_finished: its connection
    goes back to the pool)."""
    status = []
    response = app(environ(method, route, query, user), lambda s, headers, exc_info=None: status.append(s))
    try:
        body = b"".join(response)
        if not status[0].startswith("200"):
            raise RuntimeError(f"{method} {route}: {status[0]}: {body[:200]!r}")
        answer = json.loads(body)
        sent(answer)
        done()
        return answer
    finally:
        response.close()


def write_request(k, v, answer, finish):
    serve("POST", "/write", f"k={k}&v={v}", sent=lambda r: answer(r["pid"]), done=finish.wait)


def read_request(k):
    r = serve("GET", "/read", f"k={k}")
    return r["v"], r["port"], r["pid"]


# The session each kind of request runs in: the user's, and none for an
# anonymous visitor (the recipe resets what the connection had).
sessions = {"user": serve("GET", "/session", "")["session"],
            "anonymous": serve("GET", "/session", "", user=None)["session"]}
pooled.run(write_request, read_request, pairs, think, f"django-{mode}", sessions=sessions)
