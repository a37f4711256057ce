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


OIDC = {
    "console_oidc_authorization_endpoint": "https://sso.bank.example/oauth2/authorize",
    "console_oidc_token_endpoint": "https://sso.bank.example:8443/oauth2/token",
    "console_oidc_client_id": "zhongtai-console",
}


def test_config_names_the_oidc_provider_and_the_csp_lets_the_page_reach_its_token_endpoint() -> None:
    plain = console("test")
    _, body, content_type, headers = plain.respond("GET", "/console/config.json", b"")
    assert content_type == "application/json"
    assert httpx.Response(200, content=body).json() == {"oidc": None, "devTokens": False}
    assert ("content-security-policy", CSP) in headers
    assert httpx.Response(200, content=console().respond("GET", "/console/config.json", b"")[1]).json()["devTokens"]

    oidc = Console(GatewaySettings(environment="test", auth_hs256_secret=SECRET, **OIDC), assets=ASSETS)
    _, body, _, headers = oidc.respond("GET", "/console/config.json", b"")
    config = httpx.Response(200, content=body).json()
    assert config["devTokens"] is False and "secret" not in body.decode().lower()
    assert config["oidc"] == {
        "authorizationEndpoint": OIDC["console_oidc_authorization_endpoint"],
        "tokenEndpoint": OIDC["console_oidc_token_endpoint"],
        "clientId": "zhongtai-console",
        "scope": GatewaySettings.model_fields["console_oidc_scope"].default,
    }
    csp = dict(headers)["content-security-policy"]
    assert "connect-src 'self' https://sso.bank.example:8443;" in csp
    assert dict(oidc.respond("GET", "/console/app.js", b"")[3])["content-security-policy"] == csp


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"console_oidc_client_id": ""}, "ZT_CONSOLE_OIDC_CLIENT_ID"),
        ({"console_oidc_token_endpoint": ""}, "ZT_CONSOLE_OIDC_TOKEN_ENDPOINT"),
        ({"console_oidc_token_endpoint": "http://sso.bank.example/token"}, "ZT_CONSOLE_OIDC_TOKEN_ENDPOINT"),
        (
            {"console_oidc_authorization_endpoint": "sso.bank.example/authorize"},
            "ZT_CONSOLE_OIDC_AUTHORIZATION_ENDPOINT",
        ),
    ],
)
def test_oidc_settings_come_complete_and_over_https(changes: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        GatewaySettings(environment="test", auth_hs256_secret=SECRET, **{**OIDC, **changes})
    local = {**OIDC, "console_oidc_token_endpoint": "http://127.0.0.1:5556/token"}
    assert GatewaySettings(environment="test", auth_hs256_secret=SECRET, **local).console_oidc_client_id


def test_a_console_directory_replaces_the_packaged_build(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pages").mkdir()
    (tmp_path / "index.html").write_bytes(b"<!doctype html><title>custom</title>")
    (tmp_path / "pages" / "ops.js").write_bytes(b"export {}")
    custom = Console(GatewaySettings(environment="test", auth_hs256_secret=SECRET, console_dir=str(tmp_path)))
    assert custom.respond("GET", "/console/", b"")[1] == b"<!doctype html><title>custom</title>"
    assert custom.respond("GET", "/console/pages/ops.js", b"")[2].startswith("text/javascript")
