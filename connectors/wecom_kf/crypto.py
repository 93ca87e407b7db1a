"""WeCom's callback cryptography (企业微信 "加解密方案说明", the WXBizMsgCrypt scheme).

- msg_signature = sha1 of the sorted, concatenated (token, timestamp, nonce, ciphertext);
- the AES key is base64decode(EncodingAESKey + "="): 32 bytes, AES-256-CBC, IV = key[:16];
- the plaintext is 16 random bytes + msg length (4 bytes, big-endian) + msg + receiveid
  (the corp id), PKCS#7-padded to a multiple of 32 bytes;
- the ciphertext travels base64-encoded (the echostr of the GET handshake, <Encrypt> of a POST).

Every failure is a `CryptoError` naming what is wrong; nothing here raises anything else.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_BITS = 256          # WeCom pads to 32-byte blocks, not AES's 16
MAX_CIPHERTEXT = 1 << 20  # a callback is a few hundred bytes; anything near this is not WeCom


class CryptoError(ValueError):
    pass


def aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise CryptoError(f"EncodingAESKey must be 43 characters, not {len(encoding_aes_key)}")
    try:
        key = binascii.a2b_base64((encoding_aes_key + "=").encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CryptoError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise CryptoError("EncodingAESKey must decode to a 32-byte key")
    return key


def signature(token: str, timestamp: str, nonce: str, ciphertext: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, ciphertext))).encode()).hexdigest()


def signature_matches(expected: str, token: str, timestamp: str, nonce: str, ciphertext: str) -> bool:
    return hmac.compare_digest(expected.lower().encode(), signature(token, timestamp, nonce, ciphertext).encode())


def decrypt(key: bytes, ciphertext_b64: str) -> tuple[bytes, str]:
    """(msg, receiveid) of a base64 ciphertext."""
    raw = _unbase64(ciphertext_b64)
    if not raw or len(raw) % 16 or len(raw) > MAX_CIPHERTEXT:
        raise CryptoError(f"ciphertext is {len(raw)} bytes: not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    plain = _unpad(padded)
    if len(plain) < 20:
        raise CryptoError("plaintext is shorter than its 20-byte header")
    (length,) = struct.unpack(">I", plain[16:20])
    if 20 + length > len(plain):
        raise CryptoError(f"message length {length} runs past the plaintext (wrong EncodingAESKey?)")
    try:
        receive_id = plain[20 + length:].decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("receiveid is not UTF-8 (wrong EncodingAESKey?)") from None
    return plain[20:20 + length], receive_id


def _unbase64(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CryptoError("ciphertext is not base64") from None


def _unpad(padded: bytes) -> bytes:
    unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError("bad PKCS#7 padding after decryption (wrong EncodingAESKey?)") from None
