"""Which failures are the infrastructure's (retry them for as long as they last) and which are a
request's or an event's own (answer or dead-letter them).

One classifier for every place that must tell them apart: the gRPC interceptor maps an
infrastructure error to UNAVAILABLE (503 at the edge, safe for a channel to retry with its
Idempotency-Key), and consumers retry it with back-off instead of dead-lettering the event.

An infrastructure error is one that says nothing about the request or the event:
- the database cannot be reached or lost the connection: refused or reset sockets, connect
  timeouts, a pool timeout, SQLSTATE class 08 (connection exception), 57P01–57P04 (admin or
  crash shutdown, "the database system is starting up / not accepting connections", database
  dropped), 53300 (too many connections), 55000 "database ... is not currently accepting
  connections" (``ALLOW_CONNECTIONS false``), 25006 (read-only transaction: a standby after a
  failover), asyncpg's InternalClientError (a connection whose protocol state broke, seen when
  its backend is terminated under a read on the driver connection, ADR 0029), SQLite's
  "database is locked" / "unable to open database file";
- the broker is unreachable or not ready: any aiokafka error marked ``retriable``,
  ``KafkaConnectionError``, ``KafkaTimeoutError``.

Everything else (constraint violations, bad data, a bug) is the request's or event's own.
"""

from __future__ import annotations

import asyncio
import sqlite3

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from asyncpg.exceptions import InternalClientError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = ["is_infrastructure_error"]

#: SQLSTATEs (exact) that say the server, not the statement, is the problem.
_STATES = frozenset({"57P01", "57P02", "57P03", "57P04", "53300", "25006"})
#: SQLSTATE classes (first two characters) that do.
_CLASSES = frozenset({"08"})
#: Message fragments for errors whose SQLSTATE is shared with statement errors, or absent.
_MESSAGES = (
    "is not currently accepting connections",  # 55000 after ALTER DATABASE ... ALLOW_CONNECTIONS false
    "connection is closed",
    "connection was closed",
    "the database system is",  # starting up / shutting down / in recovery mode / not accepting
    "database is locked",  # SQLite: another writer holds the lock past the busy timeout
    "unable to open database file",
)


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def _one(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (OSError, asyncio.TimeoutError, PoolTimeoutError, KafkaConnectionError, KafkaTimeoutError)):
        return True  # (ConnectionRefusedError, ConnectionResetError, socket timeouts are OSErrors)
    if isinstance(exc, KafkaError) and exc.retriable:
        return True
    if isinstance(exc, InternalClientError):
        return True  # asyncpg: the connection's protocol state broke (e.g. its backend was terminated)
    state = _sqlstate(exc)
    if state is not None and (state in _STATES or state[:2] in _CLASSES):
        return True
    if isinstance(exc, (DBAPIError, sqlite3.Error)) or type(exc).__module__.startswith("asyncpg"):
        text = str(exc)
        return any(fragment in text for fragment in _MESSAGES)
    return False


def is_infrastructure_error(exc: BaseException) -> bool:
    """True if ``exc`` (or what it wraps: ``.orig``, its cause or context, the members of an
    exception group) is a database or broker failure rather than the request's or event's own."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _one(current):
            return True
        orig = getattr(current, "orig", None)
        # The implicit context only where Python itself would show it (no ``from None``).
        context = None if current.__suppress_context__ else current.__context__
        for nested in (orig, current.__cause__, context):
            if isinstance(nested, BaseException):
                todo.append(nested)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
    return False
