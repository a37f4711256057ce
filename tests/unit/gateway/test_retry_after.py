"""Retry-After on a backend's 503/429: the service's RetryInfo when it sent one, else 1 s."""

from __future__ import annotations

from google.rpc import code_pb2

from gateway.app import _StatusError
from gateway.errors import retry_delay_of
from services.kit.errors import NotFound, Unavailable, to_rpc_status


def test_a_backend_retry_info_sets_retry_after_in_whole_seconds_rounded_up() -> None:
    status = to_rpc_status(Unavailable("being built", reason="VIEW_NOT_BUILT", retry_delay_s=2.2))
    assert retry_delay_of(status) == 2.2
    assert _StatusError(status).headers == [("retry-after", "3")]


def test_a_503_without_retry_info_says_retry_after_one_second() -> None:
    status = to_rpc_status(Unavailable("down", reason="CUSTOMER_SERVICE_UNAVAILABLE"))
    assert retry_delay_of(status) is None
    error = _StatusError(status)
    assert error.http_status == 503 and error.headers == [("retry-after", "1")]


def test_a_retry_info_on_a_404_adds_no_retry_after() -> None:
    status = to_rpc_status(NotFound("gone", retry_delay_s=5))
    assert status.code == code_pb2.NOT_FOUND
    assert _StatusError(status).headers == []
