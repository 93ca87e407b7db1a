"""Tencent's callback cryptography (WXBizMsgCrypt), the same for a WeChat Official Account (消息加解密说明)
and for WeCom (加解密方案说明):

- signature = sha1 of the sorted, concatenated (token, timestamp, nonce[, ciphertext]);
- key = base64decode(EncodingAESKey + "="): 32 bytes, AES-256-CBC, IV = key[:16];
- the plaintext is 16 random bytes + the message length (4 bytes, big-endian) + the message +
  the receive id (an account's app id, a WeCom corp id), PKCS#7-padded to 32-byte blocks;
- the ciphertext travels base64-encoded.

Every failure is a `CryptoError` naming what is wrong; the connectors decide what to answer.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_BITS = 256          # Tencent pads to 32-byte blocks, not AES's 16
RANDOM = 16               # the random prefix, before the length
HEADER = RANDOM + 4
MAX_CIPHERTEXT = 1 << 20  # a callback is a few hundred bytes; anything near this is not Tencent


class CryptoError(ValueError):
    """What is wrong, in words. `malformed`: the ciphertext is not even well-formed as sent (not
    base64, not whole AES blocks, too large); otherwise it decrypted to something that does not
    check out (another key, tampering) or the EncodingAESKey itself is wrong."""

    def __init__(self, reason: str, *, malformed: bool = False):
        super().__init__(reason)
        self.malformed = malformed


def signature(*parts: str) -> str:
    """(token, timestamp, nonce) for a plain callback, with the ciphertext for an encrypted one."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def signature_matches(given: str, *parts: str) -> bool:
    """In constant time, and exactly: Tencent signs in lowercase hex."""
    return hmac.compare_digest(given.encode(), signature(*parts).encode())


def aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise CryptoError(f"EncodingAESKey must be 43 characters, not {len(encoding_aes_key)}")
    key = _unbase64(encoding_aes_key + "=", "EncodingAESKey")
    if len(key) != 32:
        raise CryptoError("EncodingAESKey must decode to a 32-byte key")
    return key


def encrypt(key: bytes, message: bytes, receive_id: str) -> str:
    plain = os.urandom(RANDOM) + struct.pack(">I", len(message)) + message + receive_id.encode()
    padder = padding.PKCS7(BLOCK_BITS).padder()
    encryptor = _cipher(key).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    return binascii.b2a_base64(ciphertext, newline=False).decode()


def decrypt(key: bytes, ciphertext: str) -> tuple[bytes, str]:
    """(message, receive id) of a base64 ciphertext; the caller checks the receive id is its own."""
    raw = _unbase64(ciphertext, "ciphertext", malformed=True)
    if len(raw) > MAX_CIPHERTEXT:
        raise CryptoError(f"ciphertext is {len(raw)} bytes, more than {MAX_CIPHERTEXT}", malformed=True)
    if not raw or len(raw) % 16:
        raise CryptoError(f"ciphertext is {len(raw)} bytes: not a whole number of AES blocks", malformed=True)
    decryptor = _cipher(key).decryptor()
    plain = _unpad(decryptor.update(raw) + decryptor.finalize())
    if len(plain) < HEADER:
        raise CryptoError(f"plaintext is shorter than its {HEADER}-byte header")
    (length,) = struct.unpack(">I", plain[RANDOM:HEADER])
    if HEADER + length > len(plain):
        raise CryptoError(f"message length {length} runs past the plaintext (wrong EncodingAESKey?)")
    try:
        receive_id = plain[HEADER + length:].decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("receiveid is not UTF-8 (wrong EncodingAESKey?)") from None
    return plain[HEADER:HEADER + length], receive_id


def _unbase64(text: str, what: str, malformed: bool = False) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CryptoError(f"{what} is not base64", malformed=malformed) from None


def _unpad(padded: bytes) -> bytes:
    unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError("bad PKCS#7 padding after decryption (wrong EncodingAESKey?)") from None


def _cipher(key: bytes) -> Cipher:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))
