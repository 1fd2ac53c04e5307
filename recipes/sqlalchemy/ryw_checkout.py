"""SQLAlchemy: every connection the pool hands out is bound to the ryw
session of the request being served (a context variable), so a read sees
that user's writes whichever pooled connection made them.

    engine = create_engine(url, isolation_level="AUTOCOMMIT")  # reads may leave the leader
    bind_ryw_sessions(engine)
    # per request, before the first query: ryw_session.set(f"user-{user_id}")
"""
from contextvars import ContextVar

from sqlalchemy import event

ryw_session = ContextVar("ryw_session", default=None)


def bind_ryw_sessions(engine):
    @event.listens_for(engine, "checkout")
    def bind(dbapi_connection, connection_record, connection_proxy):
        with dbapi_connection.cursor() as cursor:
            if (key := ryw_session.get()) is not None:
                cursor.execute("SELECT set_config('ryw.session', %s, false)", (key,))
            else:
                cursor.execute("RESET ryw.session")
