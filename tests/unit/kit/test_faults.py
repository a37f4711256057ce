"""The infrastructure-error classifier: what is retried for as long as it lasts, and what is not."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError, RecordTooLargeError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from services.kit.faults import is_infrastructure_error


class _Adapted(Exception):
    """What SQLAlchemy's asyncpg adapter raises: the asyncpg error's text and SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _wrapped(orig: BaseException, *, invalidated: bool = False) -> DBAPIError:
    return DBAPIError("SELECT 1", None, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(),
        TimeoutError(),
        _wrapped(_Adapted("the database system is starting up", "57P03")),
        _wrapped(_Adapted("terminating connection due to administrator command", "57P01")),
        _wrapped(_Adapted("server closed the connection", "08006")),
        _wrapped(_Adapted('database "data_hub" is not currently accepting connections', "55000")),
        _wrapped(_Adapted("sorry, too many clients already", "53300")),
        _wrapped(_Adapted("cannot execute INSERT in a read-only transaction", "25006")),
        _wrapped(_Adapted("anything", None), invalidated=True),
        OperationalError("INSERT", None, sqlite3.OperationalError("database is locked")),  # type: ignore[arg-type]
        KafkaConnectionError("broker down"),
        NotLeaderForPartitionError(),
        # (a read on the driver connection whose backend was terminated: the protocol's state broke)
        asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        ExceptionGroup("tasks", [ValueError("x"), ConnectionRefusedError()]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_infrastructure_errors_are_recognised(exc: BaseException) -> None:
    assert is_infrastructure_error(exc)


def test_cause_chain_is_followed() -> None:
    try:
        try:
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
        except Exception as inner:
            raise RuntimeError("could not apply") from inner
    except RuntimeError as exc:
        assert is_infrastructure_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad amount"),
        KeyError("customer_id"),
        IntegrityError("INSERT", None, _Adapted("duplicate key value", "23505")),  # type: ignore[arg-type]
        _wrapped(_Adapted('relation "views" does not exist', "42P01")),
        _wrapped(_Adapted("division by zero", "22012")),
        RecordTooLargeError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_of_the_request_or_event_are_not(exc: BaseException) -> None:
    assert not is_infrastructure_error(exc)


def test_suppressed_context_is_not_followed() -> None:
    try:
        try:
            raise ConnectionRefusedError()
        except OSError:
            raise ValueError("bad event") from None
    except ValueError as exc:
        assert not is_infrastructure_error(exc)
