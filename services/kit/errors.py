"""A small error hierarchy, translated to gRPC status once (in the server interceptor).

Domain and application code raise these; ``to_rpc_status`` turns them into a
``google.rpc.Status`` with ``ErrorInfo`` and ``BadRequest`` details (AIP-193). Anything else
becomes INTERNAL with no internal detail leaving the process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "zhongtai.bank"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (proto field names, dotted), why, and the rule's id as an
    UPPER_SNAKE_CASE ``reason`` (AIP-193; empty: the error's own reason is used)."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition (``google.rpc.PreconditionFailure.Violation``): ``type`` is the
    rule's code, ``subject`` the field or resource it concerns, ``description`` a sentence."""

    type: str
    subject: str
    description: str


class ZhongtaiError(Exception):
    """Base of every error we translate; ``code`` is the canonical gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retriable = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
        retry_delay_s: float | None = None,
        preconditions: Iterable[PreconditionViolation] = (),
        localized: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).upper()
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        #: When to retry, if the service knows (a ``RetryInfo`` detail; the gateway's Retry-After).
        self.retry_delay_s = retry_delay_s
        self.preconditions = tuple(preconditions)
        #: The message in other languages, by BCP 47 tag (``{"en": ..., "zh-CN": ...}``): the
        #: caller's ``accept-language`` picks one for a ``LocalizedMessage`` detail.
        self.localized = dict(localized or {})


class InvalidArgument(ZhongtaiError):
    """The request is malformed; ``violations`` name the fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ZhongtaiError):
    """The resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ZhongtaiError):
    """A resource with that identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ZhongtaiError):
    """The resource's state does not allow the operation; ``reason`` says which rule."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ZhongtaiError):
    """A concurrency conflict (stale etag, lost race); the caller may re-read and retry."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(ZhongtaiError):
    """A value is outside the allowed range (e.g. a page beyond the end)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(ZhongtaiError):
    """No valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ZhongtaiError):
    """The caller lacks a required scope."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ZhongtaiError):
    """A quota or bound was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True


class Unavailable(ZhongtaiError):
    """A dependency is down; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class DeadlineExceeded(ZhongtaiError):
    """The deadline ran out before the work finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: ZhongtaiError, accept_language: str | None = None) -> status_pb2.Status:
    """The google.rpc.Status for an error, with ErrorInfo, BadRequest, PreconditionFailure,
    LocalizedMessage (in the language ``accept_language`` prefers) and RetryInfo details."""
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    status.details.append(_pack(info))
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason or error.reason
                )
                for v in error.violations
            ]
        )
        status.details.append(_pack(bad))
    if error.preconditions:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=p.type, subject=p.subject, description=p.description
                )
                for p in error.preconditions
            ]
        )
        status.details.append(_pack(failure))
    if error.localized:
        locale = negotiate_locale(accept_language, list(error.localized))
        status.details.append(_pack(error_details_pb2.LocalizedMessage(locale=locale, message=error.localized[locale])))
    if error.retry_delay_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(error.retry_delay_s * 1e9))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status


_LANGUAGE_RANGE = re.compile(
    r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.[0-9]{0,3})?))?\s*$"
)


def negotiate_locale(accept_language: str | None, available: list[str]) -> str:
    """The first of ``available`` the ``Accept-Language`` value prefers (RFC 9110 §12.5.4: by
    q-value, an exact tag before its language's prefix match); else ``available[0]``."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        found = _LANGUAGE_RANGE.match(part)
        if found:
            q = float(found.group(2)) if found.group(2) is not None else 1.0
            if q > 0:
                ranked.append((-q, index, found.group(1).lower()))
    for _q, _index, wanted in sorted(ranked):
        if wanted == "*":
            return available[0]
        for tag in available:  # exact, then the same primary language (zh-TW → zh-CN, en-GB → en)
            if tag.lower() == wanted:
                return tag
        for tag in available:
            if tag.lower().split("-")[0] == wanted.split("-")[0]:
                return tag
    return available[0]


def internal_status() -> status_pb2.Status:
    """What leaves the process for an unexpected failure: nothing internal."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


def invalid(field: str, description: str) -> InvalidArgument:
    """Shorthand for a single-field INVALID_ARGUMENT."""
    return InvalidArgument(f"{field}: {description}", violations=[FieldViolation(field, description)])
