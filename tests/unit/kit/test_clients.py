"""The kit's service client settings and error naming (the call path itself is exercised through
the product's CustomerDirectory in tests/unit/product/test_customer_lookup.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit.clients import CallerSettings, ServiceClient, capability_of
from services.kit.errors import Unavailable
from services.kit.service_auth import DevTokenSigner, FileTokenProvider

SECRET = "unit-test-secret-0123456789-abcdefghij"


class _Caller(CallerSettings):
    service_name: str = "caller"
    service_client_id: str = "zhongtai-caller"
    service_token_scopes: str = "customers:read"


def test_a_caller_signs_its_own_token_in_dev_with_its_declared_identity() -> None:
    tokens = _Caller(auth_hs256_secret=SECRET).service_tokens()
    assert isinstance(tokens, DevTokenSigner)
    assert tokens.client_id == "zhongtai-caller" and tokens.scopes == ("customers:read",)


def test_a_caller_reads_its_token_file_when_one_is_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "token"
    path.write_text("abc.def.ghi\n")
    tokens = _Caller(service_token_file=path).service_tokens()
    assert isinstance(tokens, FileTokenProvider) and tokens.token() == "abc.def.ghi"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"service_token_scopes": "customers:read nonsense"}, "unknown scope"),
        ({"service_client_id": ""}, "ZT_SERVICE_CLIENT_ID"),
        ({"environment": "prod", "auth_jwks_file": "/etc/jwks.json"}, "ZT_SERVICE_TOKEN_FILE"),
    ],
)
def test_bad_caller_settings_are_refused_with_the_variable_named(overrides: dict, named: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Caller(**overrides)
    assert named in str(info.value)


async def test_a_client_not_started_is_unavailable_named_after_the_capability() -> None:
    class Customers(ServiceClient[customer_pb2_grpc.CustomerServiceStub]):
        stub_class = customer_pb2_grpc.CustomerServiceStub

    client = Customers("127.0.0.1:1", DevTokenSigner(secret=SECRET, client_id="x", scopes=["customers:read"]))
    with pytest.raises(Unavailable) as info:
        await client.call(lambda s: s.GetEligibilityProfile, customer_pb2.GetEligibilityProfileRequest(customer_id="c"))
    assert info.value.reason == "CUSTOMER_SERVICE_UNAVAILABLE"
    assert info.value.message == "customer lookup is not started"


def test_the_capability_is_named_after_the_stub() -> None:
    from bank.datahub.v1 import datahub_pb2_grpc

    assert capability_of(customer_pb2_grpc.CustomerServiceStub) == "customer"
    assert capability_of(datahub_pb2_grpc.CustomerViewServiceStub) == "customer_view"
