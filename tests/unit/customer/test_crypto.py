from __future__ import annotations

import base64

import pytest

from services.kit.crypto import BlindIndex, CryptoError, FieldCipher, parse_key, parse_old_keys

K1 = bytes(range(32))
K2 = bytes(range(1, 33))
AAD = b"customer:c-1:mobile"


def test_round_trip_and_random_nonce() -> None:
    cipher = FieldCipher("k1", K1)
    a, b = cipher.encrypt("13812345678", AAD), cipher.encrypt("13812345678", AAD)
    assert a != b and a.startswith("v1.k1.") and "13812345678" not in a
    assert cipher.decrypt(a, AAD) == "13812345678"


def test_ciphertext_is_bound_to_its_row_and_column() -> None:
    cipher = FieldCipher("k1", K1)
    token = cipher.encrypt("13812345678", AAD)
    with pytest.raises(CryptoError):
        cipher.decrypt(token, b"customer:c-2:mobile")


def test_tampering_is_detected() -> None:
    cipher = FieldCipher("k1", K1)
    token = cipher.encrypt("13812345678", AAD)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(CryptoError):
        cipher.decrypt(flipped, AAD)


def test_rotation_old_keys_still_open_old_values() -> None:
    old = FieldCipher("k1", K1).encrypt("zhang@example.com", AAD)
    rotated = FieldCipher("k2", K2, {"k1": K1})
    assert rotated.decrypt(old, AAD) == "zhang@example.com"
    assert rotated.needs_rotation(old)
    assert not rotated.needs_rotation(rotated.encrypt("x", AAD))
    with pytest.raises(CryptoError, match="no key with id 'k1'"):
        FieldCipher("k2", K2).decrypt(old, AAD)


def test_blind_index_is_deterministic_keyed_and_normalized() -> None:
    a, b = BlindIndex(K1), BlindIndex(K2)
    assert a.compute("11010519491231002x") == a.compute(" 11010519491231002X ")
    assert a.compute("11010519491231002X") != b.compute("11010519491231002X")
    assert len(a.compute("x")) == 64


def test_key_parsing_never_echoes_the_key() -> None:
    good = base64.b64encode(K1).decode()
    assert parse_key(good) == K1
    with pytest.raises(ValueError) as err:
        parse_key(base64.b64encode(b"short-secret").decode())
    assert "short-secret" not in str(err.value)
    assert parse_old_keys(f"k0:{good}, k9:{good}") == {"k0": K1, "k9": K1}
    assert parse_old_keys("") == {}
    with pytest.raises(ValueError):
        parse_old_keys(good)
