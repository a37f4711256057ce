"""The product service's own token: dev signer (cached, refreshed before expiry) and token file."""

from pathlib import Path

import pytest

from services.kit.auth import TokenVerifier
from services.kit.service_auth import (
    DevTokenSigner,
    FileTokenProvider,
    ServiceTokenError,
    parse_scopes,
    service_token_provider,
)

SECRET = "unit-test-secret-0123456789-abcdefghij"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_dev_signer_mints_a_token_for_its_own_client_and_scopes() -> None:
    signer = DevTokenSigner(secret=SECRET, client_id="zhongtai-product", scopes=["customers:read"])
    principal = TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET).verify(signer.token())
    assert principal.client_id == "zhongtai-product"
    assert principal.scopes == {"customers:read"}
    assert signer.metadata() == (("authorization", f"Bearer {signer.token()}"),)


def test_dev_signer_caches_and_refreshes_before_expiry() -> None:
    clock = Clock()
    signer = DevTokenSigner(
        secret=SECRET, client_id="p", scopes=["customers:read"], ttl_s=300, refresh_margin_s=60, clock=clock
    )
    first = signer.token()
    clock.now += 200
    assert signer.token() == first and signer.minted == 1
    clock.now += 41  # 59 s before expiry: inside the refresh margin
    assert signer.token() != first and signer.minted == 2


def test_file_provider_rereads_a_rotated_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-1\n")
    clock = Clock(0)
    provider = FileTokenProvider(path, reread_interval_s=10, clock=clock)
    assert provider.token() == "tok-1"
    path.write_text("tok-2")
    import os

    os.utime(path, (1, 1))
    assert provider.token() == "tok-1"  # within the re-read interval
    clock.now += 11
    assert provider.token() == "tok-2"


def test_file_provider_fails_loudly_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ServiceTokenError):
        FileTokenProvider(tmp_path / "missing").token()
    (tmp_path / "empty").write_text("")
    with pytest.raises(ServiceTokenError, match="empty"):
        FileTokenProvider(tmp_path / "empty").token()


def test_prod_refuses_dev_signing() -> None:
    with pytest.raises(ServiceTokenError, match="token file"):
        service_token_provider(
            environment="prod",
            client_id="p",
            scopes=["customers:read"],
            hs256_secret=SECRET,
            token_file=None,
            issuer="i",
            audience="a",
        )


def test_scopes_are_parsed_and_checked() -> None:
    assert parse_scopes("customers:read, products:read customers:read") == ("customers:read", "products:read")
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("customers:admin")
    with pytest.raises(ValueError):
        parse_scopes("")
