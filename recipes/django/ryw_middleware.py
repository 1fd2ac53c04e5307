"""Django: each request reads its user's own writes through `ryw proxy`,
whichever pooled connection serves it.

MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
              "ryw_middleware.ryw_session", ...]
"""
from django.db import connection


def ryw_session(get_response):
    def middleware(request):
        user = getattr(request, "user", None)
        with connection.cursor() as cursor:
            if user is not None and user.is_authenticated:
                cursor.execute("SET ryw.session = %s", [f"user-{user.pk}"])
            else:
                cursor.execute("RESET ryw.session")
        return get_response(request)

    return middleware
