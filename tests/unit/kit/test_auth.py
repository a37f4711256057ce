import time

import pytest

from services.kit.auth import TokenVerifier, authorize, bearer_token, mint_token, required_scopes
from services.kit.errors import PermissionDenied, Unauthenticated

SECRET = "unit-test-secret-0123456789-abcdefghij"


def verifier() -> TokenVerifier:
    return TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET)


def test_a_minted_token_verifies_with_its_scopes() -> None:
    principal = verifier().verify(mint_token(SECRET, ["customers:read", "pii:read"], client_id="app-1"))
    assert principal.client_id == "app-1"
    assert principal.scopes == {"customers:read", "pii:read"}


@pytest.mark.parametrize(
    ("token_kwargs", "reason"),
    [
        ({"now": time.time() - 7200, "ttl_s": 60}, "TOKEN_EXPIRED"),
        ({"issuer": "someone-else"}, "BAD_ISSUER"),
        ({"audience": "other"}, "BAD_AUDIENCE"),
    ],
)
def test_bad_tokens_are_unauthenticated(token_kwargs: dict, reason: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        verifier().verify(mint_token(SECRET, ["customers:read"], **token_kwargs))
    assert info.value.reason == reason


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        verifier().verify(mint_token("another-secret-0123456789-abcdefghijkl", ["customers:read"]))


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Basic abc") == ""
    assert bearer_token(None) == ""


def test_required_scopes_come_from_the_contract() -> None:
    assert required_scopes("/bank.customer.v1.CustomerService/CreateCustomer") == ("customers:write",)
    assert required_scopes("/grpc.health.v1.Health/Check") is None


def test_missing_scope_is_named() -> None:
    principal = verifier().verify(mint_token(SECRET, ["customers:read"]))
    with pytest.raises(PermissionDenied) as info:
        authorize(principal, "/bank.customer.v1.CustomerService/CreateCustomer")
    assert "customers:write" in info.value.message
