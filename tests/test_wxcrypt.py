"""Tencent's callback cryptography (connectors/wxcrypt.py): Tencent's published vectors for a WeChat
Official Account and for WeCom, round trips, the plaintext's layout read back with plain AES, and
every way a key or a ciphertext is refused, each by its reason."""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, strategies as st

from connectors.wxcrypt import MAX_CIPHERTEXT, CryptoError, aes_key, decrypt, encrypt, signature, signature_matches

OA_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"      # the Official Account sample's key
WECOM_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"   # WeCom's 加解密方案说明 sample key
KEY = aes_key(OA_KEY)
OA_ENCRYPT = ("hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFm"
              "OD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU"
              "8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszT"
              "fRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9"
              "ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=")
WECOM_ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
WECOM_ENCRYPT = ("RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W"
                 "/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+"
                 "HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJ"
                 "B3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3f"
                 "VKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")


def aes(plain: bytes, key: bytes = KEY) -> str:
    """Raw AES-256-CBC of `plain` as given (no padding added): lets a test write any plaintext."""
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def unaes(ciphertext: str, key: bytes = KEY) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return decryptor.update(base64.b64decode(ciphertext)) + decryptor.finalize()


def pad32(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


# -- Tencent's published vectors -------------------------------------------------------------------
def test_the_official_account_sample_verifies_and_decrypts():
    assert signature("spamtest", "1409735669", "1320562132", OA_ENCRYPT) == "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
    message, app_id = decrypt(KEY, OA_ENCRYPT)
    assert app_id == "wx2c2769f8efd9abc2"
    assert message.startswith(b"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>")
    assert b"<Content><![CDATA[abcdteT]]></Content>" in message and message.endswith(b"</xml>")


def test_the_wecom_samples_verify_and_decrypt():
    key = aes_key(WECOM_KEY)
    assert signature("QDG6eK", "1409659589", "263014780", WECOM_ECHOSTR) == "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    assert decrypt(key, WECOM_ECHOSTR) == (b"1616140317555161061", "wx5823bf96d3bd56c7")
    assert signature("QDG6eK", "1409659813", "1372623149", WECOM_ENCRYPT) == "477715d11cdb4164915debcba66cb864d751f3e6"
    message, corp_id = decrypt(key, WECOM_ENCRYPT)
    assert corp_id == "wx5823bf96d3bd56c7" and b"<Content><![CDATA[hello]]></Content>" in message


# -- signatures ------------------------------------------------------------------------------------
def test_a_signature_does_not_depend_on_the_order_of_its_parts():
    assert signature("token", "1409659589", "263014780") == signature("263014780", "token", "1409659589")
    assert signature("token", "1", "2") != signature("token", "1", "2", "ciphertext")


@pytest.mark.parametrize("given_text", ["", "0" * 40, "5C45FF5E21C57E6AD56BAC8758B79B1D9AC89FD3", "签名" * 20],
                         ids=["empty", "zeros", "uppercase", "not-ascii"])
def test_a_signature_matches_only_itself_exactly(given_text):
    parts = ("QDG6eK", "1409659589", "263014780", WECOM_ECHOSTR)
    assert signature_matches("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", *parts)
    assert not signature_matches(given_text, *parts)


# -- round trips -----------------------------------------------------------------------------------
def test_chinese_text_round_trips_and_each_encryption_differs():
    xml = "<xml><Content><![CDATA[你好，订单什么时候发货？🚚 <b>&amp;</b>]]></Content></xml>".encode()
    first, second = encrypt(KEY, xml, "ww5823bf96d3bd56c7"), encrypt(KEY, xml, "ww5823bf96d3bd56c7")
    assert first != second      # the random prefix
    assert decrypt(KEY, first) == decrypt(KEY, second) == (xml, "ww5823bf96d3bd56c7")
    assert decrypt(KEY, encrypt(KEY, b"", "wx2c2769f8efd9abc2")) == (b"", "wx2c2769f8efd9abc2")


def test_the_plaintext_is_random_length_message_receive_id_padded_to_32_bytes():
    message = "中文 English 🎉".encode()
    plain = unaes(encrypt(KEY, message, "企业 corp"))
    pad = plain[-1]
    assert len(plain) % 32 == 0 and 1 <= pad <= 32 and plain[-pad:] == bytes([pad]) * pad
    assert plain[16:20] == len(message).to_bytes(4, "big")
    assert plain[20:-pad] == message + "企业 corp".encode()


@given(message=st.binary(max_size=300), receive_id=st.text(max_size=40))
def test_any_message_and_receive_id_round_trip(message, receive_id):
    assert decrypt(KEY, encrypt(KEY, message, receive_id)) == (message, receive_id)


WHOLE_BLOCKS = st.binary(min_size=16, max_size=200).map(lambda b: base64.b64encode(b[: len(b) // 16 * 16]).decode())


@given(text=st.text(max_size=200) | WHOLE_BLOCKS | st.binary(max_size=200).map(lambda b: aes(pad32(b))))
def test_any_text_decrypts_or_is_a_crypto_error(text):
    """Text, random AES blocks, and well-padded random plaintexts: never another exception."""
    try:
        decrypt(KEY, text)
    except CryptoError:
        pass


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key_text, reason", [
    (OA_KEY[:-1], "EncodingAESKey must be 43 characters, not 42"),
    (OA_KEY + "H", "EncodingAESKey must be 43 characters, not 44"),
    (OA_KEY[:-1] + "*", "EncodingAESKey is not base64"),
    (OA_KEY[:-1] + "密", "EncodingAESKey is not base64"),
    (OA_KEY[:-1] + "=", "EncodingAESKey must decode to a 32-byte key"),
], ids=["short", "long", "not-base64", "not-ascii", "31-bytes"])
def test_a_bad_encoding_aes_key_is_named_and_never_echoed(key_text, reason):
    with pytest.raises(CryptoError) as error:
        aes_key(key_text)
    assert str(error.value) == reason and key_text[:-1] not in str(error.value)


HEADER_ONLY = b"r" * 16 + (2).to_bytes(4, "big")
REFUSED = {  # name: (ciphertext, words of the reason, malformed as sent)
    "not base64": ("%%%not*base64%%%", "ciphertext is not base64", True),
    "not ascii": ("密文" * 8, "ciphertext is not base64", True),
    "a space inside": (WECOM_ECHOSTR.replace("+", " "), "ciphertext is not base64", True),
    "empty": ("", "ciphertext is 0 bytes: not a whole number of AES blocks", True),
    "a partial block": (base64.b64encode(bytes(17)).decode(), "17 bytes: not a whole number of AES blocks", True),
    "too large": (base64.b64encode(bytes(MAX_CIPHERTEXT + 16)).decode(), f"more than {MAX_CIPHERTEXT}", True),
    "bad padding": (aes(bytes(64)), "bad PKCS#7 padding", False),
    "padded to 16 bytes, not 32": (aes(HEADER_ONLY + b"hi" + b"wx2c2769f8" + bytes([16]) * 16),
                                   "bad PKCS#7 padding", False),
    "another key": (aes(pad32(HEADER_ONLY + b"hiwx"), aes_key(WECOM_KEY)), "wrong EncodingAESKey", False),
    "header cut short": (aes(pad32(b"r" * 16)), "plaintext is shorter than its 20-byte header", False),
    "length past the end": (aes(pad32(b"r" * 16 + (9999).to_bytes(4, "big") + b"<xml/>")),
                            "message length 9999 runs past the plaintext", False),
    "receive id not UTF-8": (aes(pad32(HEADER_ONLY + b"hi" + b"\xff\xfe")), "receiveid is not UTF-8", False),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_bad_ciphertext_is_refused_naming_the_reason(name):
    ciphertext, words, malformed = REFUSED[name]
    with pytest.raises(CryptoError) as error:
        decrypt(KEY, ciphertext)
    assert words in str(error.value) and error.value.malformed is malformed


def test_the_crypto_error_is_a_value_error():
    assert issubclass(CryptoError, ValueError) and CryptoError("x").malformed is False
