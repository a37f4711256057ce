"""The gateway: Starlette's router (lifespan, request, response) in front of the contract's
router (google.api.http templates with custom verbs, most literal first), as its default app.

(It was a raw ASGI application; Starlette costs ~10 % of the gateway's instructions per request,
under the 20 % that would justify hand-written code — docs/perf/libraries.md — so the library it
is. Its router, not the ``Starlette`` application class: the application's two middlewares and
the endpoint wrapper's exception handling add three closures around every ASGI message and
handle nothing here, since the pipeline answers every exception itself; −2.5 % instructions.)

Per request, in order: server span (continuing an incoming ``traceparent``) → built-in
endpoints (/healthz, /readyz, /openapi.json, /asyncapi.json, /docs, CORS preflight) → route match → bearer
token + the method's ``required_scopes`` → quota → deadline → body (size limit) → ONE parse
into the request message → Idempotency-Key → gRPC call (token and request id forwarded) →
JSON response. Every failure becomes ``google.rpc.Status`` JSON in :mod:`gateway.errors`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import grpc
import orjson
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router as AsgiRouter

from gateway import conditional
from gateway.asyncapi import build_asyncapi
from gateway.backends import Backends
from gateway.body import discard, has_body, read_body
from gateway.console import Console
from gateway.errors import (
    HttpError,
    http_status_of,
    internal_status,
    reason_of,
    render_status,
    retry_delay_of,
    status_from_rpc_error,
    with_json_field_paths,
)
from gateway.idempotency import KeyReused, StoredResponse, fingerprint
from gateway.openapi import build_openapi
from gateway.quotas import retry_after_header
from gateway.routing import Route, Router, discover_routes, load_contracts
from gateway.settings import GatewaySettings
from gateway.shared_state import build_idempotency, build_quotas, unavailable_store
from gateway.transcode import build_request, json_path, render_response
from services.kit.auth import Principal, TokenVerifier, authorize, bearer_token
from services.kit.errors import (
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    ZhongtaiError,
)
from services.kit.logging import get_logger

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = get_logger("zhongtai.gateway")
tracer = trace.get_tracer("zhongtai.gateway")
_meter = metrics.get_meter("zhongtai.gateway")
_duration = _meter.create_histogram(
    "http.server.request.duration", unit="s", description="Gateway request duration (RED: rate, errors, duration)"
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{7,63}$")
_GRPC_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_JSON = "application/json"
_CORS_ALLOW_HEADERS = (
    "authorization, content-type, idempotency-key, x-request-id, x-timeout-ms, grpc-timeout, traceparent, tracestate, "
    "if-match, if-none-match, accept-language"
)
_CORS_EXPOSE_HEADERS = "x-request-id, traceparent, retry-after, idempotent-replayed, etag"


def _docs_html() -> bytes:
    return resources.files("gateway").joinpath("static/docs.html").read_bytes()


def _traceparent(span: trace.Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class _Request:
    """What the pipeline learns about one request (for the response headers, metrics and the log)."""

    __slots__ = (
        "accept_language", "body_read", "client_id", "conditional", "extra_headers", "method", "path", "request_id",
        "route_name", "started", "status",
    )  # fmt: skip

    def __init__(self, method: str, path: str, request_id: str) -> None:
        self.accept_language: str | None = None
        #: The request carried an If-Match entity tag: an etag mismatch is 412, not 409.
        self.conditional = False
        #: The body was read (or refused with its own draining): nothing is left unread.
        self.body_read = False
        self.method = method
        self.path = path
        self.request_id = request_id
        self.route_name = "unmatched"
        self.client_id: str | None = None
        self.status = 500
        self.started = time.perf_counter()
        self.extra_headers: list[tuple[str, str]] = []


class GatewayApp:
    """ASGI 3 application (Starlette's); the lifespan opens the backend channels, and closes them."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        verifier: TokenVerifier | None = None,
        routes: list[Route] | None = None,
    ) -> None:
        self.settings = settings
        self.verifier = verifier or TokenVerifier.from_settings(settings)
        self.routes = routes if routes is not None else discover_routes(load_contracts())
        self.router = Router(self.routes)
        self.backends = Backends(
            settings.backend_targets(),
            self.routes,
            retry_attempts=settings.retry_attempts,
            backoff_s=settings.retry_backoff_s,
            connect_wait_s=settings.gateway_connect_wait_s,
        )
        self.quotas = build_quotas(settings)
        self.idempotency = build_idempotency(settings)
        self._etag_responses = frozenset(r.full_method for r in self.routes if conditional.response_has_etag(r))
        self.openapi = build_openapi(self.routes)
        self._openapi_bytes = orjson.dumps(self.openapi)
        self._asyncapi_bytes = orjson.dumps(build_asyncapi(load_contracts()))
        self._docs = _docs_html()
        self.console = Console(settings)
        self._cors_any = "*" in settings.cors_origins
        self._cors = frozenset(settings.cors_origins)
        self._started = False
        # Bound once (the proxy from get_logger binds on every call): logging must be configured
        # before the app is created, as gateway.main does.
        self._access_log = get_logger("zhongtai.gateway").bind() if settings.access_log else None
        # Every request goes to the pipeline (the contract's router decides what it is): Starlette's
        # router, holding no routes of its own, hands it to its default app. (A catch-all route
        # would not do: its pattern's ``.*`` stops at a newline, which a client can send as %0A.)
        self._asgi = AsgiRouter(default=self._default, lifespan=self._lifespan)

    # ---------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        if not self._started:
            await self.idempotency.start()
            await self.backends.start()
            self._started = True
            log.info("gateway ready", routes=len(self.routes), backends=self.backends.targets)

    async def shutdown(self) -> None:
        if self._started:
            self._started = False
            await self.backends.stop()
            await self.quotas.close()
            await self.idempotency.stop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: object) -> AsyncIterator[None]:
        try:
            await self.startup()
        except Exception:
            log.exception("gateway start-up failed")
            raise
        try:
            yield
        finally:
            await self.shutdown()

    # ---------------------------------------------------------------- ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    async def _default(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self._endpoint(Request(scope, receive, send))
            await response(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _endpoint(self, request: Request) -> Response:
        scope = request.scope
        headers = dict(request.headers.items())
        incoming = headers.get("x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()
        method = scope["method"]
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope["path"]
        req = _Request(method, path, request_id)
        # Started and made current by hand (start_as_current_span's context managers cost more);
        # same behaviour: an Exception escaping sets the ERROR status, the span ends after the log line.
        span = tracer.start_span(
            f"{method} unmatched",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "zhongtai.request_id": request_id},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await self._respond(scope, request.receive, headers, req, span)
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    async def _respond(
        self, scope: Scope, receive: Receive, headers: dict[str, str], req: _Request, span: trace.Span
    ) -> Response:
        method, request_id = req.method, req.request_id
        status, body, content_type = await self._handle(scope, receive, headers, req, span)
        route_name = req.route_name
        span.update_name(f"{method} {route_name}")
        span.set_attributes({"http.route": route_name, "http.response.status_code": status})
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        # (a 304 has no content, so no content headers: RFC 9110 §15.4.5; Starlette adds no length)
        response = Response(body, status_code=status, media_type=None if status == 304 else content_type)
        out_headers = response.raw_headers
        out_headers.extend([(b"x-request-id", request_id.encode()), (b"cache-control", b"no-store")])
        traceparent = _traceparent(span)
        if traceparent:
            out_headers.append((b"traceparent", traceparent.encode()))
        if req.extra_headers:
            out_headers.extend((k.encode(), v.encode()) for k, v in req.extra_headers)
        if "origin" in headers:
            out_headers.extend(self._cors_headers(headers))
        if method == "HEAD":
            response.body = b""  # (the length stays the GET's)
        elapsed = time.perf_counter() - req.started
        _duration.record(
            elapsed, {"http.request.method": method, "http.route": route_name, "http.response.status_code": status}
        )
        if self._access_log is not None:  # inside the span: the line carries trace_id/span_id
            self._access_log.info(
                "http",
                method=method,
                route=route_name,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client_id=req.client_id,
                request_id=request_id,
            )
        return response

    def _cors_headers(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        origin = headers.get("origin")
        if not origin or not (self._cors_any or origin in self._cors):
            return []
        return [
            (b"access-control-allow-origin", origin.encode()),
            (b"vary", b"origin"),
            (b"access-control-expose-headers", _CORS_EXPOSE_HEADERS.encode()),
        ]

    # ---------------------------------------------------------------- pipeline

    async def _handle(
        self, scope: Scope, receive: Receive, headers: dict[str, str], req: _Request, span: trace.Span
    ) -> tuple[int, bytes, str]:
        try:
            if Console.handles(req.path):
                req.route_name = "/console"
                status, body, content_type, extra = self.console.respond(req.method, req.path, scope["query_string"])
                req.extra_headers.extend(extra)
                req.status = status
                return status, body, content_type
            builtin = await self._builtin(req, headers)
            if builtin is not None:
                req.status = builtin[0]
                return builtin
            status, body = await self._rpc(scope, receive, headers, req)
        except HttpError as exc:
            req.extra_headers.extend(exc.headers)
            status, body = exc.http_status, render_status(exc.status)
        except ZhongtaiError as exc:
            error = HttpError(exc)
            status, body = error.http_status, render_status(error.status)
        except Exception:
            log.exception("gateway request failed", route=req.route_name)
            status, body = 500, render_status(internal_status())
        req.status = status
        if not req.body_read and has_body(headers):  # answered early: drain the body first (gateway/body.py)
            limit, timeout_s = self.settings.max_body_bytes, self.settings.default_timeout_s
            if not await discard(receive, headers, limit=limit, timeout_s=timeout_s):
                req.extra_headers.append(("connection", "close"))
        return status, body, _JSON

    async def _builtin(self, req: _Request, headers: dict[str, str]) -> tuple[int, bytes, str] | None:
        method, path = req.method, req.path
        if method == "OPTIONS" and "access-control-request-method" in headers:
            req.route_name = "CORS preflight"
            origin = headers.get("origin", "")
            if self._cors_any or origin in self._cors:
                allowed = ", ".join(self.router.allowed_methods(path) or ["GET", "POST", "PATCH", "PUT", "DELETE"])
                req.extra_headers.extend(
                    [
                        ("access-control-allow-methods", allowed),
                        ("access-control-allow-headers", _CORS_ALLOW_HEADERS),
                        ("access-control-max-age", "600"),
                    ]
                )
            return 204, b"", _JSON
        if method not in ("GET", "HEAD"):
            return None
        if path == "/healthz":
            req.route_name = "/healthz"
            return 200, b'{"status":"ok"}', _JSON
        if path == "/readyz":
            req.route_name = "/readyz"
            backends = await self.backends.readiness()
            ready = bool(backends) and all(v == "SERVING" for v in backends.values())
            body = orjson.dumps({"status": "ready" if ready else "not ready", "backends": backends})
            return (200 if ready else 503), body, _JSON
        if path == "/openapi.json":
            req.route_name = "/openapi.json"
            return 200, self._openapi_bytes, _JSON
        if path == "/asyncapi.json":
            req.route_name = "/asyncapi.json"
            return 200, self._asyncapi_bytes, _JSON
        if path in ("/docs", "/docs/"):
            req.route_name = "/docs"
            return 200, self._docs, "text/html; charset=utf-8"
        return None

    def _authenticate(self, headers: dict[str, str], route: Route) -> Principal:
        token = bearer_token(headers.get("authorization"))
        try:
            principal = self.verifier.verify(token)
        except Unauthenticated as exc:
            challenge = 'Bearer realm="zhongtai"'
            if token:
                challenge += f', error="invalid_token", error_description="{exc.message}"'
            raise HttpError(exc, headers=[("www-authenticate", challenge)]) from None
        try:
            authorize(principal, route.full_method)
        except ZhongtaiError as exc:
            scope = " ".join(route.scopes)
            challenge = f'Bearer realm="zhongtai", error="insufficient_scope", scope="{scope}"'
            raise HttpError(exc, headers=[("www-authenticate", challenge)]) from None
        return principal

    async def _quota(self, principal: Principal, route: Route) -> None:
        wait = await self.quotas.acquire(principal.client_id, route.group)
        if wait is None:
            return
        limit = self.quotas.limit(route.group)
        retry_after = retry_after_header(wait)
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(wait * 1e9))
        raise HttpError(
            ResourceExhausted(
                f"quota exceeded for {route.group} (client {principal.client_id}); retry after {retry_after} s",
                reason="QUOTA_EXCEEDED",
                metadata={"group": route.group, "limit_per_second": f"{limit.rate:g}" if limit else ""},
            ),
            headers=[("retry-after", retry_after)],
            details=[
                error_details_pb2.RetryInfo(retry_delay=delay),
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=f"client:{principal.client_id}",
                            description=f"{route.group} requests per second",
                        )
                    ]
                ),
            ],
        )

    def _timeout(self, headers: dict[str, str]) -> float:
        """``X-Timeout-Ms: 2500`` or ``grpc-timeout: 2500m``; capped by ZT_MAX_TIMEOUT_S."""
        cap = self.settings.max_timeout_s
        text = headers.get("x-timeout-ms")
        if text is not None:
            if not text.isdigit() or int(text) <= 0:
                raise InvalidArgument("X-Timeout-Ms must be a positive integer (milliseconds)", reason="BAD_TIMEOUT")
            return min(int(text) / 1000.0, cap)
        text = headers.get("grpc-timeout")
        if text is not None:
            found = _GRPC_TIMEOUT.match(text)
            if not found or int(found.group(1)) == 0:
                raise InvalidArgument("grpc-timeout must look like 2500m, 3S or 1M", reason="BAD_TIMEOUT")
            return min(int(found.group(1)) * _GRPC_UNITS[found.group(2)], cap)
        return self.settings.default_timeout_s

    async def _rpc(self, scope: Scope, receive: Receive, headers: dict[str, str], req: _Request) -> tuple[int, bytes]:
        match = self.router.match(req.method if req.method != "HEAD" else "GET", req.path)
        if match is None:
            allowed = self.router.allowed_methods(req.path)
            if allowed:
                req.route_name = "method not allowed"
                raise HttpError(
                    InvalidArgument(f"{req.method} is not allowed here; use {', '.join(allowed)}", reason="BAD_METHOD"),
                    http_status=405,
                    headers=[("allow", ", ".join(allowed))],
                )
            raise NotFound(f"no route for {req.method} {req.path}", reason="NO_ROUTE")
        route = match.route
        req.route_name = f"{route.template.raw}"
        principal = self._authenticate(headers, route)
        req.client_id = principal.client_id
        await self._quota(principal, route)
        timeout_s = self._timeout(headers)
        if_match, if_none_match = headers.get("if-match"), headers.get("if-none-match")
        if if_match is not None or if_none_match is not None:
            conditional.check_headers(route, if_match, if_none_match)
        req.accept_language = headers.get("accept-language")
        content_type = headers.get("content-type", _JSON).split(";", 1)[0].strip().lower()
        if (
            scope.get("http_version") in ("1.1", "1.0")
            and "content-length" not in headers
            and ("transfer-encoding" not in headers)
        ):
            raw_body = b""  # HTTP/1.x without either header has no body (RFC 9112 §6.3): no receive() round trip
        else:
            req.body_read = True
            raw_body = await read_body(receive, headers, limit=self.settings.max_body_bytes, timeout_s=timeout_s)
        if (
            raw_body
            and content_type not in (_JSON, "application/*+json", "text/json")
            and not content_type.endswith("+json")
        ):
            raise HttpError(
                InvalidArgument(
                    f"unsupported content type {content_type!r}: send application/json", reason="UNSUPPORTED_MEDIA_TYPE"
                ),
                http_status=415,
            )
        query_string = scope.get("query_string")
        query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []
        request = build_request(route, match.params, query, raw_body)
        if if_match is not None:
            req.conditional = conditional.apply_if_match(route, request, if_match)

        key = headers.get("idempotency-key") if route.http_method != "GET" else None
        if key is not None:
            return await self._idempotent(route, request, principal, key, timeout_s, req)
        status, body = await self._call(route, request, principal, timeout_s, req)
        if if_none_match is not None and conditional.none_match(if_none_match, _etag_of(req)):
            return 304, b""
        return status, body

    async def _idempotent(
        self, route: Route, request: Any, principal: Principal, key: str, timeout_s: float, req: _Request
    ) -> tuple[int, bytes]:
        if not _IDEMPOTENCY_KEY.match(key):
            raise InvalidArgument(
                "Idempotency-Key must be 8..64 characters of letters, digits and _.:- (a UUID is ideal)",
                reason="BAD_IDEMPOTENCY_KEY",
            )
        rid = route.request_id_field
        if rid is not None:
            current = getattr(request, rid.name)
            if current and current != key:
                raise InvalidArgument("request_id and the Idempotency-Key header differ", reason="IDEMPOTENCY_MISMATCH")
            setattr(request, rid.name, key)
        client = principal.client_id
        try:
            stored = await self.idempotency.begin(client, key, fingerprint(route, request), wait_s=timeout_s)
        except KeyReused:
            raise AlreadyExists(
                f"Idempotency-Key {key!r} was already used for a different request; use a new key for a new request",
                reason="IDEMPOTENCY_KEY_REUSED",
            ) from None
        except TimeoutError:
            raise DeadlineExceeded("the first request with this Idempotency-Key is still running") from None
        except Exception as exc:
            raise unavailable_store(exc) from None
        if stored is not None:
            req.extra_headers.append(("idempotent-replayed", "true"))
            return stored.status, stored.body
        try:
            # Retried on UNAVAILABLE like a read: the service deduplicates on the request_id.
            status, body = await self._call(route, request, principal, timeout_s, req, retry=rid is not None)
        except HttpError as exc:
            if exc.http_status >= 500 or exc.http_status == 429:
                await self.idempotency.abandon(client, key)
            else:
                await self.idempotency.finish(client, key, StoredResponse(exc.http_status, render_status(exc.status)))
            raise
        except BaseException:
            await self.idempotency.abandon(client, key)
            raise
        await self.idempotency.finish(client, key, StoredResponse(status, body))
        return status, body

    async def _call(
        self, route: Route, request: Any, principal: Principal, timeout_s: float, req: _Request, *, retry: bool = False
    ) -> tuple[int, bytes]:
        metadata: tuple[tuple[str, str], ...] = (
            ("authorization", f"Bearer {principal.token}"),
            ("x-request-id", req.request_id),
        )
        if req.accept_language:  # services localize refusals (LocalizedMessage)
            metadata += (("accept-language", req.accept_language),)
        try:
            response = await self.backends.call(route, request, timeout_s=timeout_s, metadata=metadata, retry=retry)
        except grpc.aio.AioRpcError as exc:
            status = with_json_field_paths(status_from_rpc_error(exc), partial(json_path, route.method.input_type))
            error = _StatusError(status)
            if req.conditional and error.http_status == 409 and reason_of(status) == "ETAG_MISMATCH":
                error.http_status = 412  # the If-Match precondition failed (RFC 9110 §13.1.1)
            raise error from None
        except TimeoutError:
            raise DeadlineExceeded("the request did not complete before its deadline") from None
        if route.full_method in self._etag_responses:
            etag = getattr(response, "etag", "")
            if etag and conditional.is_entity_tag(etag):
                req.extra_headers.append(("etag", etag))
        return 200, render_response(route, response)


def _etag_of(req: _Request) -> str:
    return next((value for name, value in req.extra_headers if name == "etag"), "")


class _StatusError(HttpError):
    """A backend's (sanitized) google.rpc.Status, passed through as is."""

    def __init__(self, status: Any) -> None:
        Exception.__init__(self, status.message)
        self.status = status
        self.http_status = http_status_of(status)
        if self.http_status in (429, 503):
            # The service's RetryInfo when it sent one (e.g. VIEW_NOT_BUILT), else 1 s.
            delay = retry_delay_of(status)
            self.headers = [("retry-after", retry_after_header(delay) if delay is not None else "1")]
        else:
            self.headers = []


def create_app(settings: GatewaySettings | None = None, **kwargs: Any) -> GatewayApp:
    """Factory for ASGI servers (``granian --factory gateway.app:create_app``)."""
    from services.kit.config import load_settings

    return GatewayApp(settings or load_settings(GatewaySettings), **kwargs)
