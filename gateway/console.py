"""The staff console's static assets under ``/console/`` (docs/console.md, ADR 0018).

The console is a plain ES-module single-page app built from ``console/`` by ``make setup``
(``python -m devtools.console_build``: its sources and the pinned npm packages it needs, copied
into ``gateway/static/console/``, shipped as package data). The gateway reads the files once
at start-up and serves them with a Content-Security-Policy that lets the page talk to this
origin only: no CDN, no request leaves the page except to the gateway's own API, which the
console calls with the signed-in user's bearer token like any channel app.

``GET /console/config.json`` tells the page how users sign in: the bank's OIDC provider
(authorization code + PKCE, ``ZT_CONSOLE_OIDC_*``; the token endpoint's origin is then the one
other origin the CSP lets the page call) and whether dev tokens exist.
``GET /console/dev-token?scope=...`` mints a short-lived HS256 token with the asked scopes, but
only where dev tokens are accepted anyway (``ZT_ENVIRONMENT=dev`` with ``ZT_AUTH_HS256_SECRET``);
elsewhere it does not exist (404) and the console takes a token from the bank's OIDC provider.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson

from gateway.errors import HttpError
from gateway.settings import GatewaySettings
from services.kit.auth import ALL_SCOPES, mint_token
from services.kit.errors import InvalidArgument, NotFound, Unavailable, invalid

PREFIX = "/console/"
DEV_TOKEN_PATH = "/console/dev-token"  # noqa: S105 - a URL path, not a secret
CONFIG_PATH = "/console/config.json"
DEV_TOKEN_TTL_S = 3600
#: The page may load and call only its own origin (the gateway); ECharts styles its own nodes.
CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".json": "application/json", ".svg": "image/svg+xml"}  # fmt: skip

Reply = tuple[int, bytes, str, list[tuple[str, str]]]


def _walk(node: Traversable, prefix: str, out: dict[str, bytes]) -> None:
    for child in node.iterdir():
        name = prefix + child.name
        if child.is_dir():
            _walk(child, name + "/", out)
        elif not child.name.startswith("."):
            out[name] = child.read_bytes()


def load_assets(directory: str = "") -> dict[str, bytes]:
    """Relative path → content of every built console file (empty when not built): the packaged
    build, or the one in ``directory`` (``ZT_CONSOLE_DIR``)."""
    root: Traversable = Path(directory) if directory else resources.files("gateway").joinpath("static/console")
    out: dict[str, bytes] = {}
    if root.is_dir():
        _walk(root, "", out)
    return out


class Console:
    """Answers ``/console`` requests from memory; failures raise (the app renders them as
    ``google.rpc.Status`` JSON like any other)."""

    def __init__(self, settings: GatewaySettings, assets: dict[str, bytes] | None = None) -> None:
        self._assets = load_assets(settings.console_dir) if assets is None else assets
        secret = settings.auth_hs256_secret
        self._dev_secret = secret.get_secret_value() if secret is not None and settings.environment == "dev" else None
        self._issuer, self._audience = settings.auth_issuer, settings.auth_audience
        oidc = None
        self._csp = CSP
        if settings.console_oidc_token_endpoint:
            oidc = {"authorizationEndpoint": settings.console_oidc_authorization_endpoint,
                    "tokenEndpoint": settings.console_oidc_token_endpoint,
                    "clientId": settings.console_oidc_client_id, "scope": settings.console_oidc_scope}  # fmt: skip
            token = urlsplit(settings.console_oidc_token_endpoint)
            self._csp = CSP.replace("connect-src 'self'", f"connect-src 'self' {token.scheme}://{token.netloc}")
        self._config = orjson.dumps({"oidc": oidc, "devTokens": self._dev_secret is not None})

    @staticmethod
    def handles(path: str) -> bool:
        return path == "/console" or path.startswith(PREFIX)

    def respond(self, method: str, path: str, query: bytes) -> Reply:
        if method not in ("GET", "HEAD"):
            raise HttpError(InvalidArgument("the console serves GET only", reason="BAD_METHOD"), http_status=405,
                            headers=[("allow", "GET, HEAD")])  # fmt: skip
        headers = [("content-security-policy", self._csp), ("x-content-type-options", "nosniff"),
                   ("referrer-policy", "no-referrer")]  # fmt: skip
        if path == "/console":
            return 308, b"", "text/plain", [*headers, ("location", PREFIX)]
        if path == CONFIG_PATH:
            return 200, self._config, "application/json", [*headers, ("cache-control", "no-store")]
        if path == DEV_TOKEN_PATH:
            return 200, self._dev_token(query), "application/json", headers
        name = path[len(PREFIX) :] or "index.html"
        body = self._assets.get(name)
        if body is None:
            if not self._assets:
                raise Unavailable("the console is not built: run `make setup`", reason="CONSOLE_NOT_BUILT")
            raise NotFound(f"no console file {name!r}", reason="NO_ROUTE")
        return 200, body, _content_type(name), headers

    def _dev_token(self, query: bytes) -> bytes:
        if self._dev_secret is None:
            raise NotFound("dev tokens exist only with ZT_ENVIRONMENT=dev and an HS256 secret", reason="NO_ROUTE")
        asked = [s for k, v in parse_qsl(query.decode("latin-1")) if k == "scope" for s in v.split()]
        unknown = sorted(set(asked) - set(ALL_SCOPES))
        if unknown:
            raise invalid("scope", f"unknown scopes: {', '.join(unknown)}")
        token = mint_token(self._dev_secret, asked, client_id="console-dev", issuer=self._issuer,
                           audience=self._audience, ttl_s=DEV_TOKEN_TTL_S)  # fmt: skip
        body = {"access_token": token, "token_type": "Bearer", "expires_in": DEV_TOKEN_TTL_S, "scope": " ".join(asked)}
        return orjson.dumps(body)


def _content_type(name: str) -> str:
    suffix = name[name.rfind(".") :] if "." in name else ""
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
