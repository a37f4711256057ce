"""A backend that stops mid-call (bare CANCELLED) is answered as unavailable, never as 499."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2

from gateway.errors import http_status_of, status_from_rpc_error


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="Cancelled")


def test_a_bare_cancelled_from_a_backend_is_a_retryable_503() -> None:
    status = status_from_rpc_error(_error(grpc.StatusCode.CANCELLED))
    assert status.code == code_pb2.UNAVAILABLE
    assert http_status_of(status) == 503
    assert "retry" in status.message


def test_unavailable_stays_unavailable() -> None:
    status = status_from_rpc_error(_error(grpc.StatusCode.UNAVAILABLE))
    assert (status.code, http_status_of(status)) == (code_pb2.UNAVAILABLE, 503)
