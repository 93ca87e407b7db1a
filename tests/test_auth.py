"""Authentication building blocks: passwords, tokens, customer signatures, API keys."""
from __future__ import annotations

import time

import jwt
import pytest

from gateway.auth import (AuthError, Principal, TokenSigner, api_secret_hash, bearer_token, customer_signature,
                          hash_password, parse_api_key, password_problem, redact, verify_customer_signature,
                          verify_password)

SECRET = b"s" * 40
P = Principal(kind="agent", merchant="m1", id="a1", role="supervisor", token_version=3)


class Clock:
    t = 1_800_000_000.0

    def __call__(self):
        return self.t


def test_password_hash_verifies_only_the_password():
    h = hash_password("正确的密码 correct")
    assert h.startswith("$argon2id$") and "正确" not in h
    assert verify_password(h, "正确的密码 correct")
    assert not verify_password(h, "wrong password")
    assert not verify_password("not a hash", "anything")


@pytest.mark.parametrize("pw,reason", [("short", "at least 10"), ("x" * 257, "at most 256"), ("tab\there-1234", "control")])
def test_weak_passwords_are_refused_with_the_reason(pw, reason):
    assert reason in password_problem(pw)


def test_a_good_password_has_no_problem():
    assert password_problem("一二三四五六七八九十") is None


def test_token_round_trip():
    signer = TokenSigner(SECRET, clock=Clock())
    token, exp = signer.issue(P)
    assert exp == int(Clock.t) + 12 * 3600
    assert signer.verify(token) == P


def test_token_expires_by_the_clock():
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    token, exp = signer.issue(P, ttl_s=60)
    clock.t += 61
    with pytest.raises(AuthError) as e:
        signer.verify(token)
    assert e.value.code == "expired_token"


def claims():
    return {"sub": "a1", "m": "m1", "k": "agent", "r": "owner", "v": 0, "iat": int(time.time()),
            "exp": int(time.time()) + 600}


@pytest.mark.parametrize("token", [
    jwt.encode(claims(), b"o" * 40, algorithm="HS256"),                 # another secret
    jwt.encode(claims(), None, algorithm="none"),                       # unsigned
    jwt.encode(claims(), SECRET, algorithm="HS512"),                    # another algorithm
    jwt.encode({k: v for k, v in claims().items() if k != "m"}, SECRET, algorithm="HS256"),  # missing claim
    jwt.encode({**claims(), "sub": 7}, SECRET, algorithm="HS256"),      # wrong claim type
    "garbage", "", "a.b.c",
])
def test_bad_tokens_are_invalid(token):
    with pytest.raises(AuthError) as e:
        TokenSigner(SECRET).verify(token)
    assert e.value.code == "invalid_token"
    assert token[:20] not in e.value.message or not token


def test_tampered_token_is_invalid():
    token, _ = TokenSigner(SECRET).issue(P)
    head, body, sig = token.split(".")
    with pytest.raises(AuthError):
        TokenSigner(SECRET).verify(f"{head}.{body[:-3]}abc.{sig}")


def test_short_secrets_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        TokenSigner(b"short")


def test_customer_signature_checks():
    now = 1_800_000_000
    sig = customer_signature("shop-secret", "m1", "顾客-42", now)
    verify_customer_signature("shop-secret", "m1", "顾客-42", now, sig, now=now + 5)
    for args, code in [(("other-secret", "m1", "顾客-42"), "forged_signature"),
                       (("shop-secret", "m2", "顾客-42"), "forged_signature"),
                       (("shop-secret", "m1", "顾客-43"), "forged_signature")]:
        with pytest.raises(AuthError) as e:
            verify_customer_signature(*args, now, sig, now=now)
        assert e.value.code == code
    with pytest.raises(AuthError) as e:
        verify_customer_signature("shop-secret", "m1", "顾客-42", now, sig, now=now + 601)
    assert e.value.code == "stale_signature"


def test_api_keys_parse():
    key = "pdk_0123456789ab_" + "Z" * 43
    assert parse_api_key(key) == ("0123456789ab", "Z" * 43)
    assert len(api_secret_hash("Z" * 43)) == 64
    for bad in ["pdk_xyz", "pdk_0123456789ab_short", "xxx_0123456789ab_" + "Z" * 43, "pdk_0123456789AB_" + "Z" * 43]:
        with pytest.raises(AuthError) as e:
            parse_api_key(bad)
        assert e.value.code == "bad_api_key"


@pytest.mark.parametrize("header,code", [(None, "missing_token"), ("", "missing_token"), ("Basic abc", "invalid_token"),
                                         ("Bearer", "invalid_token"), ("Bearer    ", "invalid_token")])
def test_bearer_header_problems(header, code):
    with pytest.raises(AuthError) as e:
        bearer_token(header)
    assert e.value.code == code


def test_bearer_header_ok_and_redact():
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert redact("password=hunter2 and key=k1", "hunter2", "k1") == "password=*** and key=***"


def test_the_documented_python_snippet_signs_what_the_gateway_verifies():
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "widget-identity.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    scope: dict = {}
    exec(snippet, scope)
    signed = scope["sign_customer"]("shop-secret", "tmall-shop", "u-10086")
    verify_customer_signature("shop-secret", "tmall-shop", "u-10086", signed["ts"], signed["signature"],
                              now=signed["ts"])
