"""The gateway's console route: static files with a same-origin CSP, dev-only token minting."""

from __future__ import annotations

import httpx
import jwt
import pytest

from gateway.app import GatewayApp
from gateway.console import CSP, Console
from gateway.settings import GatewaySettings
from services.kit.errors import InvalidArgument, NotFound, Unavailable

SECRET = "console-unit-test-secret-0123456789abcdef"
ASSETS = {"index.html": b"<!doctype html>", "app.js": b"export {}", "vendor/echarts.common.min.js": b"/*e*/"}


def console(environment: str = "dev", assets: dict[str, bytes] | None = ASSETS) -> Console:
    return Console(GatewaySettings(environment=environment, auth_hs256_secret=SECRET), assets=assets)


def test_files_are_served_with_their_type_and_a_same_origin_csp() -> None:
    status, body, content_type, headers = console().respond("GET", "/console/", b"")
    assert (status, body, content_type) == (200, b"<!doctype html>", "text/html; charset=utf-8")
    assert ("content-security-policy", CSP) in headers and "connect-src 'self'" in CSP
    assert console().respond("GET", "/console/vendor/echarts.common.min.js", b"")[2].startswith("text/javascript")
    assert console().respond("GET", "/console", b"")[0] == 308


def test_unknown_files_methods_and_a_missing_build_are_clear_errors() -> None:
    with pytest.raises(NotFound):
        console().respond("GET", "/console/../secrets", b"")
    with pytest.raises(Exception, match="GET only"):
        console().respond("POST", "/console/app.js", b"")
    with pytest.raises(Unavailable, match="make setup"):
        console(assets={}).respond("GET", "/console/", b"")


def test_dev_tokens_carry_the_asked_scopes_and_exist_only_in_dev() -> None:
    _, body, _, _ = console().respond("GET", "/console/dev-token", b"scope=views:read+ops:admin")
    claims = jwt.decode(httpx.Response(200, content=body).json()["access_token"], SECRET, algorithms=["HS256"],
                        audience="zhongtai")  # fmt: skip
    assert claims["scope"] == "views:read ops:admin" and claims["client_id"] == "console-dev"
    with pytest.raises(InvalidArgument, match="scope"):
        console().respond("GET", "/console/dev-token", b"scope=root")
    for elsewhere in (console("test"), _no_secret()):  # test/prod, or no HS256 secret: no such route
        with pytest.raises(NotFound):
            elsewhere.respond("GET", "/console/dev-token", b"")


def _no_secret() -> Console:
    return Console(GatewaySettings(environment="dev"), assets=ASSETS)


async def test_the_gateway_routes_console_paths_before_the_contract() -> None:
    app = GatewayApp(GatewaySettings(environment="test", auth_hs256_secret=SECRET, access_log=False))
    app.console = Console(app.settings, assets=ASSETS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        page = await client.get("/console/app.js")
        assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
        missing = await client.get("/console/nope.js")
        assert missing.status_code == 404 and missing.json()["message"].startswith("no console file")
        assert (await client.get("/console/dev-token")).status_code == 404  # not in test
