"""WeChat's callback signatures and its message encryption (安全模式): the cryptography is
connectors/wxcrypt.py (Tencent's WXBizMsgCrypt scheme, shared with WeCom); here its failures become
`Refused`. A ciphertext malformed as sent, or a message that is not UTF-8, is a bad request (400);
one that decrypts to nothing of this account's (another key, tampering, another app id) is
refused (403). Nothing here logs or returns partial text.
"""
from __future__ import annotations

from connectors import wxcrypt
from connectors.base import Refused


def check_signature(given: str, *parts: str, name: str = "signature") -> None:
    if not wxcrypt.signature_matches(given, *parts):
        raise Refused(f"{name}: does not match the token (forged, or signed with another token)", 403)


class MessageCrypt:
    """The AES of one account: `key_text` is its 43-character EncodingAESKey."""

    def __init__(self, key_text: str, app_id: str):
        self.key, self.app_id = wxcrypt.aes_key(key_text), app_id

    def encrypt(self, xml: str) -> str:
        return wxcrypt.encrypt(self.key, xml.encode(), self.app_id)

    def decrypt(self, encrypted: str) -> str:
        try:
            body, app_id = wxcrypt.decrypt(self.key, encrypted)
        except wxcrypt.CryptoError as exc:
            raise Refused(f"Encrypt: {exc}", 400 if exc.malformed else 403) from None
        if app_id != self.app_id:
            raise Refused("Encrypt: the message is for another app id", 403)
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise Refused("Encrypt: the decrypted message is not UTF-8", 400) from None
