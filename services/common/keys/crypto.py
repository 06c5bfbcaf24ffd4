"""Envelope encryption at rest (ARCHITECTURE §7): AES-256-GCM under per-order data keys,
each data key wrapped (AES-256-GCM) by a master key that lives outside the database.

Blob envelope, version 1 (29 bytes of overhead):

    magic  b"\\x00HSE"   4 bytes  NUL first: never a JPEG/PNG/WebP/HEIC/GIF signature or text
    version 0x01        1 byte
    nonce               12 bytes random (a data key seals at most a few thousand blobs, far
                        below the 2**32 random-nonce limit NIST SP 800-38D sets per key)
    ciphertext ‖ tag    len(plaintext) + 16

The associated data is the header followed by the caller's `aad` (the blob key), so a
ciphertext renamed to another key, or a header edited, fails authentication.

Wrapped data key, version 1: 0x01 ‖ nonce(12) ‖ GCM(master, data_key, aad=b"hs-dk1:"+key_id)
(61 bytes). Binding the key id means a wrapped key copied onto another order's row will not
unwrap. The master key's id is stored next to the wrapped key (keyring table), so rotation
re-wraps rows still under an old id.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAGIC = b"\x00HSE"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 1 + NONCE_BYTES
OVERHEAD = HEADER_BYTES + TAG_BYTES
_WRAP_VERSION = 1
_WRAP_AAD = b"hs-dk1:"
WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES


class DecryptionError(ValueError):
    """The bytes are not a valid envelope, or do not authenticate under this key and aad."""


def generate_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def check_key(key: bytes, what: str = "key") -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        got = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ValueError(f"{what} must be {KEY_BYTES} bytes (AES-256), got {got}")
    return bytes(key)


def wrap_key(master: bytes, data_key: bytes, key_id: str) -> bytes:
    """Seal `data_key` under `master`, bound to the data key's id."""
    check_key(master, "master key")
    check_key(data_key, "data key")
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(master).encrypt(nonce, data_key, _WRAP_AAD + key_id.encode())
    return bytes([_WRAP_VERSION]) + nonce + sealed


def unwrap_key(master: bytes, wrapped: bytes, key_id: str) -> bytes:
    check_key(master, "master key")
    if len(wrapped) != WRAPPED_BYTES or wrapped[0] != _WRAP_VERSION:
        raise DecryptionError("wrapped data key has an unknown format")
    nonce, sealed = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
    try:
        return AESGCM(master).decrypt(nonce, sealed, _WRAP_AAD + key_id.encode())
    except InvalidTag:
        raise DecryptionError(
            "data key does not unwrap: wrong master key, or the wrapped key was moved"
        ) from None


def encrypt(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    check_key(data_key, "data key")
    header = MAGIC + bytes([VERSION]) + os.urandom(NONCE_BYTES)
    return header + AESGCM(data_key).encrypt(header[-NONCE_BYTES:], plaintext, header + aad)


def is_envelope(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def decrypt(data_key: bytes, envelope: bytes, aad: bytes) -> bytes:
    check_key(data_key, "data key")
    if not is_envelope(envelope):
        raise DecryptionError("not an encrypted blob (no envelope header)")
    if len(envelope) < OVERHEAD:
        raise DecryptionError("encrypted blob is truncated")
    if envelope[len(MAGIC)] != VERSION:
        raise DecryptionError(f"unsupported envelope version {envelope[len(MAGIC)]}")
    header = envelope[:HEADER_BYTES]
    try:
        return AESGCM(data_key).decrypt(
            header[-NONCE_BYTES:], envelope[HEADER_BYTES:], header + aad
        )
    except InvalidTag:
        raise DecryptionError(
            "encrypted blob does not authenticate: wrong key, moved to another name, or tampered"
        ) from None
