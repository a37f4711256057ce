"""Configuration of the customer service: the kit's settings plus the PII keys.

| variable | default (dev/test only) | meaning |
|---|---|---|
| ``ZT_PII_KEY`` | :data:`DEV_PII_KEY` | base64 of the 32-byte AES-256-GCM key sealing new PII |
| ``ZT_PII_KEY_ID`` | ``dev1`` | id of that key, written into every ciphertext (rotation) |
| ``ZT_PII_OLD_KEYS`` | empty | ``id:base64,...`` older keys, still accepted for decryption |
| ``ZT_BLIND_INDEX_KEY`` | :data:`DEV_BLIND_INDEX_KEY` | base64 32-byte HMAC key (blind index, audit chain, tokens) |
| ``ZT_RISK_ASSESSMENT_VALIDITY_DAYS`` | ``365`` | how long a risk tolerance stays valid |
| ``ZT_BUSINESS_TIMEZONE`` | ``Asia/Shanghai`` | the calendar for ages and birthdays |

With ``ZT_ENVIRONMENT=prod`` the keys are required and the dev values are refused.
Kept apart from main.py so small tools (the audit verifier) load it without the gRPC stack.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from services.kit import BlindIndex, FieldCipher, ServiceSettings, parse_key, parse_old_keys

# Documented, PUBLIC dev/test-only keys (base64 of SHA-256 of "zhongtai-dev-pii-key" and of
# "zhongtai-dev-blind-index-key"). Used when the variables are unset outside prod; refused in prod.
DEV_PII_KEY = "P4GnikIrg7C4yh5vh0Rea0YrG5IGPDcQ5dGvIvCytIY="
DEV_PII_KEY_ID = "dev1"
DEV_BLIND_INDEX_KEY = "NzsmNGQPPRJ6zcRSKbyhrzZh+Co0TgMmoYbDquHvXKU="


class CustomerSettings(ServiceSettings):
    """ServiceSettings plus the PII keys (ZT_PII_KEY, ZT_PII_KEY_ID, ZT_PII_OLD_KEYS, ZT_BLIND_INDEX_KEY)."""

    service_name: str = "customer"
    pii_key: SecretStr | None = None
    pii_key_id: str = ""
    pii_old_keys: SecretStr = SecretStr("")
    blind_index_key: SecretStr | None = None
    risk_assessment_validity_days: int = Field(365, ge=1, le=3650)
    business_timezone: str = "Asia/Shanghai"

    @field_validator("pii_key", "blind_index_key")
    @classmethod
    def _key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value(), name="the key")
        return value

    @field_validator("pii_old_keys")
    @classmethod
    def _old_keys_shape(cls, value: SecretStr) -> SecretStr:
        parse_old_keys(value.get_secret_value())
        return value

    @field_validator("business_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _pii_keys(self) -> CustomerSettings:
        if self.environment == "prod":
            missing = [
                name
                for name, value in (
                    ("ZT_PII_KEY", self.pii_key),
                    ("ZT_PII_KEY_ID", self.pii_key_id),
                    ("ZT_BLIND_INDEX_KEY", self.blind_index_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)} required when ZT_ENVIRONMENT=prod (dev keys are refused)")
            dev = {DEV_PII_KEY, DEV_BLIND_INDEX_KEY}
            if self.pii_key is not None and self.pii_key.get_secret_value() in dev:
                raise ValueError("ZT_PII_KEY is the public dev key; refused when ZT_ENVIRONMENT=prod")
            if self.blind_index_key is not None and self.blind_index_key.get_secret_value() in dev:
                raise ValueError("ZT_BLIND_INDEX_KEY is the public dev key; refused when ZT_ENVIRONMENT=prod")
        if self.pii_key is None:
            self.pii_key = SecretStr(DEV_PII_KEY)
            self.pii_key_id = self.pii_key_id or DEV_PII_KEY_ID
        if not self.pii_key_id:
            raise ValueError("ZT_PII_KEY_ID is required when ZT_PII_KEY is set")
        if self.blind_index_key is None:
            self.blind_index_key = SecretStr(DEV_BLIND_INDEX_KEY)
        return self


def build_crypto(settings: CustomerSettings) -> tuple[FieldCipher, BlindIndex]:
    assert settings.pii_key is not None and settings.blind_index_key is not None  # filled by the validator
    cipher = FieldCipher(
        settings.pii_key_id,
        parse_key(settings.pii_key.get_secret_value()),
        parse_old_keys(settings.pii_old_keys.get_secret_value()),
    )
    return cipher, BlindIndex(parse_key(settings.blind_index_key.get_secret_value()))
