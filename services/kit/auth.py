"""OAuth2 bearer tokens (JWT): verification, dev minting, and the contract's required scopes.

Production verifies RS256 against a JWKS file; local development uses an HS256 secret. Scopes
are the RFC 9068 space-separated ``scope`` claim; the client id is ``client_id`` (else ``sub``).
Which scopes a method needs is read from the ``bank.api.v1.required_scopes`` option in the
contract, never from code.
"""

from __future__ import annotations

import contextvars
import importlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from google.protobuf import descriptor_pool

from services.kit.errors import PermissionDenied, Unauthenticated

ALL_SCOPES = (
    "customers:read", "customers:write", "pii:read", "products:read", "products:admin",
    "subscriptions:read", "subscriptions:write", "views:read", "segments:admin", "ops:admin",
)  # fmt: skip


@dataclass(frozen=True)
class Principal:
    """Who is calling, with which scopes; ``token`` is forwarded to downstream services."""

    client_id: str
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    token: str = field(default="", repr=False)

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def missing(self, required: Iterable[str]) -> list[str]:
        return [s for s in required if s not in self.scopes]


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("current_principal", default=None)


class TokenVerifier:
    """Checks signature, issuer, audience and expiry; returns the :class:`Principal`.

    With ``cache_size > 0`` (``ZT_TOKEN_CACHE_SIZE``: the gateway and every service), a token
    that verified is remembered by its exact string in a bounded LRU until its ``exp`` (+ leeway)
    passes: signature, issuer and audience cannot change for the same string, and the keys are
    fixed for the process's life. Revocation is by expiry only, cached or not (tokens are
    short-lived bearer tokens); failed verifications are never cached.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        hs256_secret: str | None = None,
        jwks_file: Path | None = None,
        leeway_s: int = 30,
        cache_size: int = 0,
    ) -> None:
        if not hs256_secret and jwks_file is None:
            raise ValueError("a token verifier needs ZT_AUTH_HS256_SECRET or ZT_AUTH_JWKS_FILE")
        self._issuer = issuer
        self._audience = audience
        self._secret = hs256_secret
        self._leeway = leeway_s
        self._jwks = jwt.PyJWKSet.from_dict(json.loads(jwks_file.read_text())) if jwks_file else None
        self._cache_size = cache_size
        #: token → (principal, valid until: exp + leeway, epoch seconds)
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any) -> TokenVerifier:
        """From the kit's settings (``ZT_AUTH_*``, ``ZT_TOKEN_CACHE_SIZE``)."""
        secret = settings.auth_hs256_secret.get_secret_value() if settings.auth_hs256_secret else None
        return cls(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            hs256_secret=secret,
            jwks_file=settings.auth_jwks_file,
            leeway_s=settings.auth_leeway_s,
            cache_size=settings.token_cache_size,
        )

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if self._jwks is not None and alg in ("RS256", "ES256", "PS256"):
            kid = header.get("kid")
            for key in self._jwks.keys:
                if kid is None or key.key_id == kid:
                    return key.key, [str(alg)]
            raise Unauthenticated("token signed with an unknown key", reason="UNKNOWN_KEY")
        if self._secret and alg == "HS256":
            return self._secret, ["HS256"]
        raise Unauthenticated(f"token algorithm {alg!r} is not accepted", reason="BAD_ALGORITHM")

    def verify(self, token: str) -> Principal:
        if not token:
            raise Unauthenticated("missing bearer token", reason="MISSING_TOKEN")
        if self._cache_size:
            cached = self._cache.get(token)
            if cached is not None:
                if time.time() < cached[1]:
                    self._cache.move_to_end(token)
                    return cached[0]
                self._cache.pop(token, None)  # expired: verify again, which says so
        principal, claims = self._verify(token)
        if self._cache_size:
            self._cache[token] = (principal, float(claims["exp"]) + self._leeway)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        try:
            key, algorithms = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("token issuer is not trusted", reason="BAD_ISSUER") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("token audience does not match", reason="BAD_AUDIENCE") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token", reason="INVALID_TOKEN") from exc
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
        subject = str(claims.get("sub", ""))
        return Principal(str(claims.get("client_id") or subject), subject, scopes, token), claims


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` value ('' when absent or malformed)."""
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def mint_token(
    secret: str,
    scopes: Iterable[str],
    *,
    client_id: str = "dev-cli",
    subject: str | None = None,
    issuer: str = "zhongtai-dev",
    audience: str = "zhongtai",
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """An HS256 token for local development and tests."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject or client_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@lru_cache(maxsize=1024)
def required_scopes(full_method: str) -> tuple[str, ...] | None:
    """Scopes a method declares in the contract; None for methods outside our packages.

    ``full_method`` is the gRPC path, ``/bank.customer.v1.CustomerService/CreateCustomer``.
    A method in a ``bank.`` package that declares no scopes gets an empty tuple, which the
    interceptor treats as "deny" (every RPC must declare its scopes).
    """
    service, _, method = full_method.lstrip("/").partition("/")
    if not service.startswith("bank."):
        return None
    options_pb2 = importlib.import_module("bank.api.v1.options_pb2")
    try:
        desc = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:
        return ()
    return tuple(desc.GetOptions().Extensions[options_pb2.required_scopes])


def authorize(principal: Principal, full_method: str) -> None:
    """Raise PermissionDenied naming the missing scopes."""
    needed = required_scopes(full_method)
    if needed is None:
        return
    if not needed:
        raise PermissionDenied(f"{full_method} declares no scopes and is closed", reason="NO_SCOPES_DECLARED")
    missing = principal.missing(needed)
    if missing:
        raise PermissionDenied(
            f"missing scope: {' '.join(missing)}",
            reason="MISSING_SCOPE",
            metadata={"missing_scopes": " ".join(missing)},
        )
