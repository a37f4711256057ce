"""Field-level encryption of PII at rest (AES-256-GCM) and HMAC-SHA256 blind indexes.

Ciphertexts are self-describing text: ``v1.<key_id>.<base64url(nonce || ciphertext+tag)>``. The
key id makes keys rotatable: new values are sealed with the *current* key, while any key listed
as an old key still opens what it sealed. Each value is bound to its row and column through
the associated data (e.g. ``b"customer:c-123:mobile"``), so a ciphertext copied into another
row or column does not decrypt.

A blind index is ``hex(HMAC-SHA256(blind_key, normalized value))``: equal inputs give equal
indexes (a unique constraint or lookup works), yet the index reveals nothing without the key.
It is keyed separately from encryption and is *not* rotated with it (rotating it means
recomputing every index).

Keys come from settings as base64 (32 bytes each); :func:`parse_key` and :func:`parse_old_keys`
validate them with errors that name the problem but never echo the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12


class CryptoError(Exception):
    """A ciphertext cannot be opened (unknown key id, corrupted or tampered)."""


def parse_key(value: str, *, name: str = "key") -> bytes:
    """Decode a base64 key and check it is 32 bytes (the message never contains the key)."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} must be base64") from exc
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{name} must decode to {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _check_key_id(key_id: str) -> str:
    if not key_id or not key_id.replace("-", "").replace("_", "").isalnum() or len(key_id) > 32:
        raise ValueError("key id must be 1..32 characters of [A-Za-z0-9_-]")
    return key_id


def parse_old_keys(value: str) -> dict[str, bytes]:
    """``"id1:base64,id2:base64"`` → ``{"id1": key, "id2": key}`` ('' → {})."""
    keys: dict[str, bytes] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep:
            raise ValueError("old keys must be 'id:base64' pairs separated by commas")
        key_id = _check_key_id(key_id.strip())
        keys[key_id] = parse_key(encoded, name=f"old key {key_id!r}")
    return keys


class FieldCipher:
    """AES-256-GCM for single values, with a current key and any number of old keys."""

    def __init__(self, current_key_id: str, current_key: bytes, old_keys: Mapping[str, bytes] | None = None) -> None:
        self.key_id = _check_key_id(current_key_id)
        if len(current_key) != KEY_BYTES:
            raise ValueError(f"the current key must be {KEY_BYTES} bytes")
        self._aead: dict[str, AESGCM] = {kid: AESGCM(key) for kid, key in (old_keys or {}).items()}
        self._aead[self.key_id] = AESGCM(current_key)

    def encrypt(self, plaintext: str, associated_data: bytes) -> str:
        """Seal with the current key: ``v1.<key_id>.<nonce+ct, base64url>``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.key_id].encrypt(nonce, plaintext.encode("utf-8"), associated_data)
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{FORMAT_VERSION}.{self.key_id}.{body}"

    def decrypt(self, token: str, associated_data: bytes) -> str:
        """Open a value sealed by the current or any old key; :class:`CryptoError` otherwise."""
        _, key_id, body = self._split(token)
        aead = self._aead.get(key_id)
        if aead is None:
            raise CryptoError(f"no key with id {key_id!r} is configured")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise CryptoError(f"ciphertext under key {key_id!r} does not verify") from exc
        return plain.decode("utf-8")

    def key_id_of(self, token: str) -> str:
        return self._split(token)[1]

    def needs_rotation(self, token: str) -> bool:
        """True when the value was sealed with an old key (re-encrypt it on the next write)."""
        return self.key_id_of(token) != self.key_id

    @staticmethod
    def _split(token: str) -> tuple[str, str, str]:
        version, _, rest = token.partition(".")
        key_id, _, body = rest.partition(".")
        if version != FORMAT_VERSION or not key_id or not body:
            raise CryptoError("not a v1 field ciphertext")
        return version, key_id, body


class BlindIndex:
    """Keyed, deterministic fingerprints for equality lookups on encrypted values."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"the blind index key must be at least {KEY_BYTES} bytes")
        self._key = key

    def compute(self, value: str, *, domain: str = "") -> str:
        """Hex HMAC-SHA256 of ``domain`` + the normalized value (strip, upper-case)."""
        normalized = value.strip().upper().encode("utf-8")
        message = domain.encode("utf-8") + b"\x00" + normalized if domain else normalized
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def mac(self, data: bytes, *, purpose: str) -> bytes:
        """A raw HMAC for other integrity needs (request fingerprints, page tokens)."""
        return hmac.new(self._key, purpose.encode("utf-8") + b"\x00" + data, hashlib.sha256).digest()
