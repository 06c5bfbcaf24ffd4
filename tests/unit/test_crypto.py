"""Envelope encryption: what is stored cannot be read, moved or edited without notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.keys import crypto
from services.common.keys.crypto import DecryptionError

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
KEY = b"k" * 32
AAD = b"tenants/t1/orders/o1/photos/1.jpg"


def _a_jpeg() -> bytes:
    return next(FACES.rglob("*.jpg")).read_bytes()


def test_round_trip_of_a_real_photo_hides_its_signature() -> None:
    photo = _a_jpeg()
    assert photo[:3] == b"\xff\xd8\xff"
    sealed = crypto.encrypt(KEY, photo, AAD)
    assert sealed[:3] != b"\xff\xd8\xff" and sealed[:4] != b"\x89PNG"
    assert sealed.startswith(crypto.MAGIC) and crypto.is_envelope(sealed)
    assert len(sealed) == len(photo) + crypto.OVERHEAD
    assert photo[100:164] not in sealed
    assert crypto.decrypt(KEY, sealed, AAD) == photo


def test_same_plaintext_encrypts_differently_each_time() -> None:
    assert crypto.encrypt(KEY, b"same", AAD) != crypto.encrypt(KEY, b"same", AAD)


def test_ciphertext_under_another_name_fails() -> None:
    sealed = crypto.encrypt(KEY, b"selfie", AAD)
    with pytest.raises(DecryptionError, match="moved to another name"):
        crypto.decrypt(KEY, sealed, b"tenants/t1/orders/o2/photos/1.jpg")


def test_wrong_key_fails() -> None:
    sealed = crypto.encrypt(KEY, b"selfie", AAD)
    with pytest.raises(DecryptionError):
        crypto.decrypt(b"x" * 32, sealed, AAD)


@pytest.mark.parametrize("offset", [4, 6, 20, -1])  # version, nonce, body, tag
def test_any_edited_byte_fails(offset: int) -> None:
    sealed = bytearray(crypto.encrypt(KEY, b"a" * 64, AAD))
    sealed[offset] ^= 0x01
    with pytest.raises(DecryptionError):
        crypto.decrypt(KEY, bytes(sealed), AAD)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\xff\xd8\xff\xe0 plain jpeg", "not an encrypted blob"),
        (crypto.MAGIC + b"\x01short", "truncated"),
        (crypto.MAGIC + b"\x09" + b"\0" * 40, "unsupported envelope version 9"),
    ],
)
def test_malformed_envelopes_are_named(blob: bytes, message: str) -> None:
    with pytest.raises(DecryptionError, match=message):
        crypto.decrypt(KEY, blob, AAD)


def test_wrapped_key_unwraps_only_with_its_master_and_id() -> None:
    master, data_key = crypto.generate_data_key(), crypto.generate_data_key()
    wrapped = crypto.wrap_key(master, data_key, "key-a")
    assert len(wrapped) == crypto.WRAPPED_BYTES and data_key not in wrapped
    assert crypto.unwrap_key(master, wrapped, "key-a") == data_key
    with pytest.raises(DecryptionError, match="wrong master key"):
        crypto.unwrap_key(crypto.generate_data_key(), wrapped, "key-a")
    with pytest.raises(DecryptionError):  # copied onto another key's row
        crypto.unwrap_key(master, wrapped, "key-b")


def test_rewrapping_under_a_new_master_keeps_the_data_key() -> None:
    old, new, data_key = (crypto.generate_data_key() for _ in range(3))
    rewrapped = crypto.wrap_key(
        new, crypto.unwrap_key(old, crypto.wrap_key(old, data_key, "k"), "k"), "k"
    )
    assert crypto.unwrap_key(new, rewrapped, "k") == data_key


@pytest.mark.parametrize("bad", [b"short", b"x" * 16, "x" * 32])
def test_keys_that_are_not_aes_256_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.encrypt(bad, b"x", AAD)  # type: ignore[arg-type]
