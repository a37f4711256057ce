"""In-process stack for gateway tests: fake backends on the kit's GrpcServer + the ASGI app.

The backends implement the generated services generically (every method answers with an empty
response unless a test installs a handler), behind the kit's per-call wrapper (``KitCall``), so
auth, protovalidate and error translation behave exactly as in the real services.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor, message_factory

from gateway.app import GatewayApp
from gateway.routing import discover_routes, load_contracts
from gateway.settings import GatewaySettings
from services.kit.auth import ALL_SCOPES, TokenVerifier, mint_token
from services.kit.grpc_server import GrpcServer
from services.kit.telemetry import InMemoryTelemetry, install_in_memory

SECRET = "gateway-test-secret-0123456789-abcdefgh"
ALL = list(ALL_SCOPES)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class FakeBackend:
    """Answers every RPC of ``services``; ``handlers[full_method]`` overrides one."""

    services: list[descriptor.ServiceDescriptor]
    validate: bool = True
    #: 0: a free port; a fixed one to restart the backend where its clients expect it.
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    server: GrpcServer | None = None

    def _register(self, server: grpc.aio.Server) -> None:
        for service in self.services:
            methods = {}
            for method in service.methods:
                full = f"/{service.full_name}/{method.name}"
                in_cls = message_factory.GetMessageClass(method.input_type)
                out_cls = message_factory.GetMessageClass(method.output_type)

                async def behavior(request: Any, context: Any, _full: str = full, _out: Any = out_cls) -> Any:
                    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
                    self.calls.append(Call(_full, request, metadata))
                    handler = self.handlers.get(_full)
                    return await handler(request, context) if handler else _out()

                methods[method.name] = grpc.unary_unary_rpc_method_handler(
                    behavior, request_deserializer=in_cls.FromString, response_serializer=out_cls.SerializeToString
                )
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, methods),))

    async def start(self) -> str:
        self.server = GrpcServer(
            host="127.0.0.1",
            port=self.port,
            register=self._register,
            service_names=[s.full_name for s in self.services],
            verifier=TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET),
            validate=self.validate,
            shutdown_grace_s=0.5,
        )
        await self.server.start()
        return f"127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def calls_to(self, rpc: str) -> list[Call]:
        return [c for c in self.calls if c.method.endswith(f"/{rpc}")]


def all_services() -> list[descriptor.ServiceDescriptor]:
    return sorted({r.method.containing_service for r in discover_routes(load_contracts())}, key=lambda s: s.full_name)


def token(scopes: list[str] | str = ALL, **kwargs: Any) -> str:
    return mint_token(SECRET, scopes.split() if isinstance(scopes, str) else scopes, **kwargs)


def auth(scopes: list[str] | str = ALL, **kwargs: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {token(scopes, **kwargs)}"}


@dataclass
class Stack:
    backend: FakeBackend
    app: GatewayApp
    client: httpx.AsyncClient


def settings_for(target: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "auth_hs256_secret": SECRET,
        "customer_target": target,
        "product_target": target,
        "datahub_target": target,
        "access_log": False,
        "quota_reads_rps": 1000.0,
        "quota_reads_burst": 1000,
        "quota_writes_rps": 1000.0,
        "quota_writes_burst": 1000,
        "quota_admin_rps": 1000.0,
        "quota_admin_burst": 1000,
        "retry_backoff_s": 0.01,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@contextlib.asynccontextmanager
async def gateway_for(settings: GatewaySettings, **kwargs: Any) -> AsyncIterator[tuple[GatewayApp, httpx.AsyncClient]]:
    app = GatewayApp(settings, **kwargs)
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield app, client
    finally:
        await app.shutdown()


@pytest.fixture(scope="session")
def telemetry() -> InMemoryTelemetry:
    return install_in_memory("gateway-tests")


@pytest.fixture(scope="module")
async def backend(telemetry: InMemoryTelemetry) -> AsyncIterator[FakeBackend]:
    fake = FakeBackend(all_services())
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def stack(backend: FakeBackend) -> AsyncIterator[Stack]:
    backend.calls.clear()
    backend.handlers.clear()
    assert backend.server is not None
    async with gateway_for(settings_for(f"127.0.0.1:{backend.server.port}")) as (app, client):
        yield Stack(backend, app, client)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The google.rpc.Status body, checked for shape; plus a reason/violations digest."""
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert isinstance(body["code"], int) and isinstance(body["message"], str)
    assert "Traceback" not in response.text
    digest: dict[str, Any] = {"code": body["code"], "message": body["message"], "reason": None, "fields": []}
    for detail in body["details"]:
        assert detail["@type"].startswith("type.googleapis.com/google.rpc.")
        if detail["@type"].endswith("ErrorInfo"):
            digest["reason"] = detail.get("reason")
            digest["domain"] = detail.get("domain")
            digest["metadata"] = detail.get("metadata", {})
        if detail["@type"].endswith("BadRequest"):
            digest["fields"] = [v["field"] for v in detail.get("fieldViolations", [])]
    return digest
