"""A service's OWN credentials for calls to other services (OAuth2 client-credentials style).

When the product service asks the customer service for an eligibility profile it calls as
itself — client id ``zhongtai-product`` with the narrow scopes its configuration names (e.g.
``customers:read``) — never with an escalated copy of the end user's token.

Two providers, one interface (:class:`ServiceTokenProvider`: ``token()`` and ``metadata()``):

- :class:`DevTokenSigner` (``dev``/``test``): mints a short-lived HS256 token with the shared
  dev secret, caches it and mints a new one ``refresh_margin_s`` before expiry.
- :class:`FileTokenProvider` (``prod``): reads the token from a file that the platform keeps
  fresh — a sidecar or init job performing the OAuth2 client-credentials grant against the
  bank's authorization server (or a projected service-account token), written atomically. It is
  re-read when the file changes and at most every ``reread_interval_s``; a missing or empty file
  is an error (the call fails, nothing falls back to an unsigned call).

:func:`service_token_provider` picks one from the settings: prod requires the file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import jwt

from services.kit.auth import ALL_SCOPES, mint_token


class ServiceTokenError(RuntimeError):
    """The service cannot obtain its own token (misconfiguration, missing token file)."""


class ServiceTokenProvider(Protocol):
    def token(self) -> str: ...

    def metadata(self) -> tuple[tuple[str, str], ...]: ...


def parse_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes from a space/comma-separated string; unknown scopes are refused."""
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    unknown = [s for s in items if s not in ALL_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {' '.join(unknown)}")
    if not items:
        raise ValueError("at least one scope is required")
    return tuple(dict.fromkeys(items))


class _Bearer:
    def token(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata carrying the token."""
        return (("authorization", f"Bearer {self.token()}"),)


class DevTokenSigner(_Bearer):
    """Mints and caches a short-lived HS256 token for the service's own client id (dev/test)."""

    def __init__(
        self,
        *,
        secret: str,
        client_id: str,
        scopes: Iterable[str],
        issuer: str = "zhongtai-dev",
        audience: str = "zhongtai",
        ttl_s: int = 300,
        refresh_margin_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= refresh_margin_s:
            raise ValueError("ttl_s must exceed refresh_margin_s")
        self._secret = secret
        self.client_id = client_id
        self.scopes = tuple(scopes)
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_s
        self._margin = refresh_margin_s
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0
        self.minted = 0

    def token(self) -> str:
        now = self._clock()
        if not self._token or now >= self._expires_at - self._margin:
            self._token = mint_token(
                self._secret,
                self.scopes,
                client_id=self.client_id,
                issuer=self._issuer,
                audience=self._audience,
                ttl_s=self._ttl,
                now=now,
            )
            self._expires_at = int(now) + self._ttl
            self.minted += 1
        return self._token


class FileTokenProvider(_Bearer):
    """Reads the service token from a file refreshed by the platform (prod)."""

    def __init__(
        self, path: Path, *, reread_interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._interval = reread_interval_s
        self._clock = clock
        self._token = ""
        self._mtime = -1.0
        self._checked = -1e18

    def token(self) -> str:
        now = self._clock()
        if self._token and now - self._checked < self._interval:
            return self._token
        self._checked = now
        try:
            mtime = self._path.stat().st_mtime
            if mtime != self._mtime or not self._token:
                text = self._path.read_text().strip()
                if not text:
                    raise ServiceTokenError(f"service token file {self._path} is empty")
                self._token, self._mtime = text, mtime
        except OSError as exc:
            raise ServiceTokenError(f"cannot read service token file {self._path}: {exc.strerror}") from exc
        return self._token


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a token, unverified (diagnostics only)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if exp is not None else None


def service_token_provider(
    *,
    environment: str,
    client_id: str,
    scopes: Iterable[str],
    hs256_secret: str | None,
    token_file: Path | None,
    issuer: str,
    audience: str,
    ttl_s: int = 300,
) -> ServiceTokenProvider:
    """The provider for this environment: the token file when set (required in prod), else the dev signer."""
    if token_file is not None:
        return FileTokenProvider(token_file)
    if environment == "prod":
        raise ServiceTokenError("prod needs a service token file (ZT_SERVICE_TOKEN_FILE); dev signing is refused")
    if not hs256_secret:
        raise ServiceTokenError("no ZT_AUTH_HS256_SECRET to sign the dev service token with")
    return DevTokenSigner(
        secret=hs256_secret,
        client_id=client_id,
        scopes=scopes,
        issuer=issuer,
        audience=audience,
        ttl_s=ttl_s,
        refresh_margin_s=max(5, ttl_s // 5),
    )
