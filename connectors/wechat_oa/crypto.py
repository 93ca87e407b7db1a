"""WeChat's callback signatures and its message encryption (安全模式), as the Official Account
documentation describes them ("消息加解密说明"):

- signature = sha1 of the sorted concatenation of (token, timestamp, nonce); in safe mode
  msg_signature adds the `Encrypt` text to the sorted strings;
- Encrypt = base64(AES-256-CBC(key, iv=key[:16], PKCS#7 padded to 32-byte blocks)) of
  16 random bytes + 4-byte network-order length + the message XML + the app id, where
  key = base64decode(EncodingAESKey + "=").

Every failure is a `Refused` naming what is wrong; nothing here logs or returns partial text.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from connectors.base import Refused

BLOCK = 32        # WeChat pads to 32 bytes, not AES's 16: its own PKCS#7 variant
RANDOM = 16       # the random prefix before the length


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def check_signature(given: str, *parts: str, name: str = "signature") -> None:
    if not hmac.compare_digest(given.encode(), signature(*parts).encode()):
        raise Refused(f"{name}: does not match the token (forged, or signed with another token)", 403)


class MessageCrypt:
    """The AES of one account: `key_text` is its 43-character EncodingAESKey."""

    def __init__(self, key_text: str, app_id: str):
        self.key = base64.b64decode(key_text + "=")
        self.app_id = app_id.encode()

    def encrypt(self, xml: str) -> str:
        raw = xml.encode()
        plain = os.urandom(RANDOM) + struct.pack(">I", len(raw)) + raw + self.app_id
        pad = BLOCK - len(plain) % BLOCK
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        plain = self._unpad(self._aes_decrypt(encrypted))
        if len(plain) < RANDOM + 4:
            raise Refused("Encrypt: too short to hold a message", 403)
        size, = struct.unpack(">I", plain[RANDOM:RANDOM + 4])
        body, app_id = plain[RANDOM + 4:RANDOM + 4 + size], plain[RANDOM + 4 + size:]
        if len(body) != size:
            raise Refused("Encrypt: the declared message length runs past the end", 403)
        if not hmac.compare_digest(app_id, self.app_id):
            raise Refused("Encrypt: the message is for another app id", 403)
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise Refused("Encrypt: the decrypted message is not UTF-8", 400) from None

    def _aes_decrypt(self, encrypted: str) -> bytes:
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("Encrypt: not base64", 400) from None
        if not data or len(data) % 16:
            raise Refused("Encrypt: not a whole number of AES blocks", 400)
        decryptor = self._cipher().decryptor()
        return decryptor.update(data) + decryptor.finalize()

    @staticmethod
    def _unpad(plain: bytes) -> bytes:
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise Refused("Encrypt: bad padding (wrong EncodingAESKey, or a tampered message)", 403)
        return plain[:-pad]

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))
