"""The one place errors become HTTP: ``google.rpc.Status`` JSON with the canonical status table.

Body (ARCHITECTURE §3)::

    {"code": 3, "message": "...", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "...", "domain": "zhongtai.bank", ...},
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "...", ...}]}]}

Details a service sends are passed through only when they are of a type meant for callers
(ErrorInfo, BadRequest, PreconditionFailure, QuotaFailure, RetryInfo, ResourceInfo, Help,
LocalizedMessage, RequestInfo); DebugInfo and anything unknown are dropped. INTERNAL,
UNKNOWN and DATA_LOSS never carry the service's message, and errors produced by the gRPC
runtime itself (connection refused, deadline) get a fixed message: no addresses, no stack traces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import grpc
import orjson
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.kit.errors import ERROR_DOMAIN, ZhongtaiError, to_rpc_status

#: Canonical gRPC code → HTTP status (google.rpc.Code docs; ARCHITECTURE §3).
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}

_PUBLIC_DETAILS = frozenset(
    f"type.googleapis.com/google.rpc.{name}"
    for name in (
        "ErrorInfo", "BadRequest", "PreconditionFailure", "QuotaFailure", "RetryInfo",
        "ResourceInfo", "Help", "LocalizedMessage", "RequestInfo",
    )
)  # fmt: skip
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_OPAQUE_CODES = frozenset({code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.DATA_LOSS})

_BACKEND_WENT_AWAY = ("the service stopped while handling the request, retry later", "BACKEND_UNAVAILABLE")

#: Messages for failures the gRPC runtime reports (no details from one of our services).
_RUNTIME_MESSAGES: dict[int, tuple[str, str]] = {
    code_pb2.UNAVAILABLE: ("the service is unavailable, retry later", "BACKEND_UNAVAILABLE"),
    code_pb2.DEADLINE_EXCEEDED: ("the request did not complete before its deadline", "DEADLINE_EXCEEDED"),
    code_pb2.CANCELLED: ("the request was cancelled", "CANCELLED"),
    code_pb2.RESOURCE_EXHAUSTED: ("the service is overloaded, retry later", "BACKEND_OVERLOADED"),
    code_pb2.UNIMPLEMENTED: ("this operation is not implemented by the service", "UNIMPLEMENTED"),
}


class HttpError(Exception):
    """An error response the gateway itself decides (auth, quota, body, routing)."""

    def __init__(
        self,
        error: ZhongtaiError,
        *,
        http_status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        details: Iterable[object] = (),
    ) -> None:
        super().__init__(error.message)
        self.status = to_rpc_status(error)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)  # type: ignore[arg-type]
            self.status.details.append(packed)
        self.http_status = http_status or HTTP_STATUS.get(self.status.code, 500)
        self.headers = list(headers)


def _error_info(reason: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return packed


def generic_status(code: int, message: str, reason: str) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    status.details.append(_error_info(reason))
    return status


def internal_status() -> status_pb2.Status:
    return generic_status(code_pb2.INTERNAL, "internal error", "INTERNAL")


def status_from_rpc_error(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """What a channel app may see of a failed backend call."""
    code = error.code().value[0]
    rich: status_pb2.Status | None = None
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            rich = status_pb2.Status.FromString(value)
            break
    if code in _OPAQUE_CODES:
        return internal_status()
    if code == code_pb2.CANCELLED and rich is None:
        # The gateway never cancels a call it still waits for (a client that goes away cancels
        # the whole request task instead), so a bare CANCELLED means the backend stopped while
        # handling it — a replica shutting down past its drain grace. Retryable: 503, like any
        # backend that went away (a write retried with its Idempotency-Key is applied once).
        return generic_status(code_pb2.UNAVAILABLE, *_BACKEND_WENT_AWAY)
    if rich is None or rich.code != code:
        message, reason = _RUNTIME_MESSAGES.get(code, ("request failed", grpc.StatusCode(error.code()).name))
        return generic_status(code, message, reason)
    clean = status_pb2.Status(code=rich.code, message=rich.message)
    clean.details.extend(d for d in rich.details if d.type_url in _PUBLIC_DETAILS)
    return clean


def render_status(status: status_pb2.Status) -> bytes:
    """google.rpc.Status as JSON (``code``, ``message``, ``details`` with ``@type``)."""
    return orjson.dumps(json_format.MessageToDict(status, always_print_fields_with_no_presence=True))


def retry_delay_of(status: status_pb2.Status) -> float | None:
    """The seconds of the status's ``RetryInfo`` detail, if a service sent one."""
    for detail in status.details:
        if detail.type_url == _RETRY_INFO:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.ToNanoseconds() / 1e9
    return None


_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def reason_of(status: status_pb2.Status) -> str:
    """The ``ErrorInfo.reason`` of a status ('' without one)."""
    for detail in status.details:
        if detail.type_url == _ERROR_INFO:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
    return ""


def with_json_field_paths(status: status_pb2.Status, rename: Callable[[str], str]) -> status_pb2.Status:
    """The status with its ``BadRequest`` field paths in the JSON names of the HTTP surface
    (AIP-193: ``customer.full_name`` in gRPC is ``customer.fullName`` in JSON)."""
    for detail in status.details:
        if detail.type_url == _BAD_REQUEST:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                for violation in bad.field_violations:
                    violation.field = rename(violation.field)
                detail.Pack(bad)
    return status


def http_status_of(status: status_pb2.Status) -> int:
    return HTTP_STATUS.get(status.code, 500)
