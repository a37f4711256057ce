"""The gateway's hot-path shortcuts keep their behaviour: the verified-token cache (kit
TokenVerifier with ``cache_size``) and the log scrubber's short-circuit."""

import time

import pytest

from services.kit.auth import TokenVerifier, mint_token
from services.kit.errors import Unauthenticated
from services.kit.logging import scrub_pii, scrub_text

SECRET = "unit-test-secret-0123456789-abcdefghij"


def cached(size: int = 100, leeway_s: int = 30) -> TokenVerifier:
    return TokenVerifier(
        issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET, leeway_s=leeway_s, cache_size=size
    )


def test_a_verified_token_is_served_from_the_cache() -> None:
    verifier = cached()
    token = mint_token(SECRET, ["customers:read"], client_id="app-1")
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # no second signature check
    assert first.client_id == "app-1" and first.token == token


def _counting(verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = verifier._verify

    def counted(token: str):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(token)

    monkeypatch.setattr(verifier, "_verify", counted)
    return calls


def test_a_cached_token_is_verified_again_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    # (The full verification then refuses it: PyJWT's own clock; see tests/unit/kit/test_auth.py.)
    verifier = cached(leeway_s=30)
    calls = _counting(verifier, monkeypatch)
    now = time.time()
    token = mint_token(SECRET, ["customers:read"], ttl_s=60, now=now)
    verifier.verify(token)
    verifier.verify(token)
    assert calls[0] == 1
    monkeypatch.setattr(time, "time", lambda: now + 89)  # within exp + leeway: still cached
    verifier.verify(token)
    assert calls[0] == 1
    monkeypatch.setattr(time, "time", lambda: now + 91)  # past exp + leeway: not served from the cache
    verifier.verify(token)
    assert calls[0] == 2


def test_an_expired_token_is_refused_by_a_caching_verifier() -> None:
    with pytest.raises(Unauthenticated) as info:
        cached().verify(mint_token(SECRET, ["customers:read"], now=time.time() - 7200, ttl_s=60))
    assert info.value.reason == "TOKEN_EXPIRED"


def test_failures_are_not_cached_and_the_cache_is_bounded() -> None:
    verifier = cached(size=2)
    bad = mint_token("another-secret-0123456789-abcdefghijkl", ["customers:read"])
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)
    tokens = [mint_token(SECRET, ["customers:read"], client_id=f"c{i}") for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._cache) == 2
    assert list(verifier._cache) == tokens[-2:]


def test_without_a_cache_size_nothing_is_cached() -> None:
    verifier = TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET)
    token = mint_token(SECRET, ["customers:read"])
    assert verifier.verify(token) is not verifier.verify(token)
    assert not verifier._cache


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("id 11010519491231002X here", "11010519491231002X"),
        ("call 13812345678", "13812345678"),
        ("mail a.b@example.com", "a.b@example.com"),
        ("Authorization: BEARER abc.def.ghi", "abc.def.ghi"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ],
)
def test_the_scrubber_short_circuit_still_masks_everything(text: str, hidden: str) -> None:
    assert hidden not in scrub_text(text)


def test_plain_values_pass_untouched_and_trace_ids_are_not_scrubbed() -> None:
    assert scrub_text("/v1/customers/{customer_id}") == "/v1/customers/{customer_id}"
    trace_id = "aaaa13812345678bbbbbbbbbbbbbbbbb"  # hex that happens to look like a mobile number
    event = scrub_pii(None, "info", {"trace_id": trace_id, "request_id": trace_id, "mobile": "x"})
    assert event["trace_id"] == trace_id
    assert event["request_id"] != trace_id  # a caller-supplied value is still scrubbed
    assert event["mobile"] == "[REDACTED]"


@pytest.mark.parametrize("service", ["customer", "product", "data_hub", "gateway"])
def test_every_service_caches_verified_tokens_by_default_and_zero_turns_it_off(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The services verify the token the gateway forwards again: with the cache, a client's
    # repeated calls cost one signature check per token, not one per call.
    from services.kit.config import ServiceSettings, load_settings

    monkeypatch.setenv("ZT_AUTH_HS256_SECRET", SECRET)
    token = mint_token(SECRET, ["customers:read"])
    verifier = TokenVerifier.from_settings(load_settings(ServiceSettings, service_name=service))
    assert verifier.verify(token) is verifier.verify(token)
    monkeypatch.setenv("ZT_TOKEN_CACHE_SIZE", "0")
    verifier = TokenVerifier.from_settings(load_settings(ServiceSettings, service_name=service))
    assert verifier.verify(token) is not verifier.verify(token)
