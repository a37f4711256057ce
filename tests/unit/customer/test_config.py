from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from services.customer.config import DEV_BLIND_INDEX_KEY, DEV_PII_KEY, CustomerSettings, build_crypto

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(1, 33))).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ZT_PII_KEY", "ZT_PII_KEY_ID", "ZT_PII_OLD_KEYS", "ZT_BLIND_INDEX_KEY", "ZT_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def test_dev_gets_documented_deterministic_keys() -> None:
    s = CustomerSettings(environment="dev")
    assert s.pii_key is not None and s.pii_key.get_secret_value() == DEV_PII_KEY and s.pii_key_id == "dev1"
    assert s.blind_index_key is not None and s.blind_index_key.get_secret_value() == DEV_BLIND_INDEX_KEY
    cipher, blind = build_crypto(s)
    assert cipher.key_id == "dev1" and blind.compute("x") == build_crypto(CustomerSettings())[1].compute("x")


def test_prod_requires_keys_and_refuses_the_dev_ones(tmp_path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    with pytest.raises(ValidationError, match="ZT_PII_KEY, ZT_PII_KEY_ID, ZT_BLIND_INDEX_KEY"):
        CustomerSettings(environment="prod", auth_jwks_file=jwks)
    with pytest.raises(ValidationError, match="public dev key"):
        CustomerSettings(environment="prod", auth_jwks_file=jwks, pii_key=DEV_PII_KEY, pii_key_id="k1",
                         blind_index_key=OTHER)  # fmt: skip
    ok = CustomerSettings(environment="prod", auth_jwks_file=jwks, pii_key=KEY, pii_key_id="k2",
                          pii_old_keys=f"k1:{OTHER}", blind_index_key=OTHER)  # fmt: skip
    cipher, _ = build_crypto(ok)
    old = build_crypto(CustomerSettings(pii_key=OTHER, pii_key_id="k1"))[0].encrypt("secret", b"aad")
    assert cipher.decrypt(old, b"aad") == "secret"


def test_bad_keys_are_named_but_not_echoed() -> None:
    with pytest.raises(ValidationError) as err:
        CustomerSettings(pii_key="dG9vIHNob3J0", pii_key_id="k1")
    assert "32 bytes" in str(err.value) and "dG9vIHNob3J0" not in str(err.value).split("input_value")[0]
    with pytest.raises(ValidationError, match="ZT_PII_KEY_ID"):
        CustomerSettings(pii_key=KEY)
    with pytest.raises(ValidationError):
        CustomerSettings(pii_old_keys="no-colon")
    with pytest.raises(ValidationError, match="time zone"):
        CustomerSettings(business_timezone="Mars/Olympus")
