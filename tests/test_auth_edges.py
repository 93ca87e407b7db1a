"""Edges of gateway/auth.py that tests/test_auth.py leaves out: algorithm confusion, each missing
claim, expiry boundaries, signature freshness both ways, every malformed API-key and header
form, and that no error message carries the token or secret."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway import auth
from gateway.auth import (AuthError, Principal, TokenSigner, api_secret_hash, bearer_token, customer_signature,
                          hash_password, parse_api_key, password_problem, redact, use_password_hasher,
                          verify_customer_signature, verify_password)

CODES = {"missing_token", "invalid_token", "expired_token", "revoked_token", "bad_credentials",
         "forged_signature", "stale_signature", "bad_api_key"}
SECRET = b"e" * 48
NOW = 1_000_000_000  # 2001: a real-time expiry check would call every token here expired
P = Principal(kind="agent", merchant="m1", id="a1", role="admin", token_version=4)


class Clock:
    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True, scope="module")
def cheap_hasher():
    """Cheap argon2id parameters for speed; the module's default hasher comes back afterwards."""
    before = auth._hasher
    use_password_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    yield
    use_password_hasher(before)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(claims: dict, header: dict | None = None, key: bytes = SECRET) -> str:
    """A JWT put together by hand, HMAC-SHA256 signed with `key` whatever the header says."""
    head = _b64(json.dumps(header if header is not None else {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = _b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def good_claims(**over) -> dict:
    return {"sub": "a1", "m": "m1", "k": "agent", "r": "admin", "v": 4, "iat": NOW, "exp": NOW + 600,
            "jti": "j1", **over}


def verify(token, clock: Clock | None = None) -> Principal:
    return TokenSigner(SECRET, clock=clock or Clock()).verify(token)


def refused(token, code: str = "invalid_token", clock: Clock | None = None) -> AuthError:
    with pytest.raises(AuthError) as e:
        verify(token, clock)
    assert e.value.code == code
    if isinstance(token, str) and len(token) >= 8:  # shorter ones match ordinary words
        assert token not in e.value.message and token not in str(e.value)
    return e.value


# -- tokens ------------------------------------------------------------------------------------
def test_a_hand_made_token_is_accepted_so_the_refusals_below_mean_something():
    assert verify(forge(good_claims())) == P


def test_issued_claims_are_exactly_the_documented_ones():
    import jwt

    signer = TokenSigner(SECRET, clock=Clock())
    token, exp = signer.issue(P, ttl_s=90)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert set(claims) == {"sub", "m", "k", "r", "v", "iat", "exp", "jti"}
    assert (claims["sub"], claims["m"], claims["k"], claims["r"], claims["v"]) == ("a1", "m1", "agent", "admin", 4)
    assert claims["iat"] == NOW and claims["exp"] == exp == NOW + 90
    assert signer.issue(P)[0] != token  # a fresh jti each time


def test_the_injected_clock_decides_expiry_not_the_real_time():
    clock = Clock()
    token, exp = TokenSigner(SECRET, clock=clock).issue(P, ttl_s=60)
    clock.t = exp - 1
    assert verify(token, clock) == P
    clock.t = exp  # exp is the first second the token no longer works
    refused(token, "expired_token", clock)
    clock.t = exp + 10 ** 6
    refused(token, "expired_token", clock)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "HS384", "HS512", "EdDSA"])
def test_a_header_naming_another_algorithm_is_refused(alg):
    refused(forge(good_claims(), {"alg": alg, "typ": "JWT"}))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_tokens_are_refused_in_every_spelling(alg):
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(good_claims()).encode())
    refused(f"{head}.{body}.")
    refused(forge(good_claims(), {"alg": alg}))


def test_a_header_without_alg_is_refused():
    refused(forge(good_claims(), {"typ": "JWT"}))


@pytest.mark.parametrize("claim", ["sub", "m", "k", "r", "exp"])
def test_each_required_claim_missing_is_refused(claim):
    claims = good_claims()
    del claims[claim]
    refused(forge(claims))


@pytest.mark.parametrize("claim,value", [("sub", 7), ("m", None), ("k", ["agent"]), ("r", {"x": 1})])
def test_identity_claims_of_another_type_are_refused(claim, value):
    refused(forge(good_claims(**{claim: value})))


@pytest.mark.parametrize("exp", ["9999999999", 9_999_999_999.5, None])
def test_an_exp_that_is_not_a_whole_number_does_not_pass(exp):
    with pytest.raises(AuthError):
        verify(forge(good_claims(exp=exp)))


@pytest.mark.parametrize("token", ["", "a", "a.b", "a.b.c", "a.b.c.d", "....", "eyJ" * 2000, "Bearer x.y.z",
                                   forge(good_claims())[:-4], forge(good_claims()) + "x",
                                   forge(good_claims(), key=b"f" * 48), None, 5])
def test_garbage_is_invalid(token):
    refused(token)


def test_payload_that_is_not_an_object_is_invalid():
    head = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(b"[1,2,3]")
    sig = _b64(hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    refused(f"{head}.{body}.{sig}")


@pytest.mark.parametrize("v", ["abc", [1]])
def test_a_version_claim_of_another_type_is_invalid_not_a_crash(v):
    """`int(claims.get("v", 0))` raises ValueError/TypeError (a 500), not AuthError. Only a token
    signed with the cluster secret can carry it, so not reachable from outside — but verify()'s
    contract is to raise AuthError only."""
    refused(forge(good_claims(v=v)))


def test_a_zero_ttl_is_not_silently_the_default():
    """`issue(p, ttl_s=0)` uses `ttl_s or self.ttl_s` and hands out a 12-hour token."""
    with pytest.raises(ValueError):
        TokenSigner(SECRET, clock=Clock()).issue(P, ttl_s=0)


def test_principals_are_frozen_values():
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.role = "owner"  # type: ignore[misc]
    assert P == Principal("agent", "m1", "a1", "admin", 4) and len({P, Principal("agent", "m1", "a1", "admin", 4)}) == 1
    assert Principal("visitor", "m1", "v1", "customer").token_version == 0


def test_every_auth_error_the_gateway_raises_uses_a_documented_code():
    gateway = Path(__file__).parent.parent / "gateway"
    used = {m for f in gateway.glob("*.py") for m in re.findall(r'AuthError\(\s*"([a-z_]+)"', f.read_text("utf-8"))}
    assert used and used <= CODES, used - CODES


# -- passwords ---------------------------------------------------------------------------------
def test_hashes_are_salted_argon2id_and_hold_no_password():
    a, b = hash_password("same password!"), hash_password("same password!")
    assert a != b and a.startswith("$argon2id$") and "same password" not in a
    assert verify_password(a, "same password!") and verify_password(b, "same password!")


@pytest.mark.parametrize("stored", ["", "$argon2id$", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$",
                                    "$2b$12$" + "a" * 53, "plain-text-password"])
def test_verify_never_raises_for_a_bad_stored_hash(stored):
    assert verify_password(stored, "plain-text-password") is False


def test_verify_handles_long_and_unicode_input():
    h = hash_password("密码-password-🔑")
    assert verify_password(h, "密码-password-🔑")
    assert not verify_password(h, "密码-password-🔑 ")
    assert not verify_password(h, "x" * 100_000)


@pytest.mark.parametrize("pw,ok", [("x" * 9, False), ("x" * 10, True), ("x" * 256, True), ("x" * 257, False),
                                   ("一二三四五六七八九", False), ("一二三四五六七八九十", True),
                                   ("🔑" * 10, True), ("  spaces are fine  ", True)])
def test_length_limits_count_characters(pw, ok):
    assert (password_problem(pw) is None) == ok


@pytest.mark.parametrize("c", [chr(i) for i in range(0x20)] + ["\x7f"], ids=lambda c: f"U+{ord(c):04X}")
def test_each_ascii_control_character_is_refused(c):
    assert "control" in password_problem(f"good-pass{c}word")


@pytest.mark.parametrize("c", ["\x85", "\x9b", "\u2028", "\u2029"], ids=lambda c: f"U+{ord(c):04X}")
def test_unicode_control_characters_are_refused_too(c):
    """`_CONTROL` is `[\\x00-\\x1f\\x7f]`: C1 controls (NEL U+0085, CSI U+009B) and the line and
    paragraph separators pass, though they break log lines and terminals just the same."""
    assert password_problem(f"good-pass{c}word") is not None


# -- customer signatures -----------------------------------------------------------------------
def test_a_signature_is_lowercase_hex_of_hmac_sha256_over_the_documented_message():
    sig = customer_signature("k" * 43, "m1", "顾客-42", NOW)
    expected = hmac.new(b"k" * 43, f"m1\n顾客-42\n{NOW}".encode(), hashlib.sha256).hexdigest()
    assert sig == expected and re.fullmatch(r"[0-9a-f]{64}", sig)


@pytest.mark.parametrize("delta", [-600, 0, 600])
def test_signatures_within_ten_minutes_either_way_pass(delta):
    sig = customer_signature("k", "m1", "c1", NOW)
    verify_customer_signature("k", "m1", "c1", NOW, sig, now=NOW + delta)


@pytest.mark.parametrize("delta", [-601, 601, 10 ** 9])
def test_signatures_further_away_either_way_are_stale(delta):
    sig = customer_signature("k", "m1", "c1", NOW)
    with pytest.raises(AuthError) as e:
        verify_customer_signature("k", "m1", "c1", NOW, sig, now=NOW + delta)
    assert e.value.code == "stale_signature" and sig not in e.value.message


def test_a_forged_old_signature_says_forged_not_stale():
    """Freshness is only told to someone who holds a valid signature."""
    with pytest.raises(AuthError) as e:
        verify_customer_signature("k", "m1", "c1", NOW - 10 ** 6, "0" * 64, now=NOW)
    assert e.value.code == "forged_signature"


def test_milliseconds_instead_of_seconds_is_stale():
    ms = NOW * 1000
    with pytest.raises(AuthError) as e:
        verify_customer_signature("k", "m1", "c1", ms, customer_signature("k", "m1", "c1", ms), now=NOW)
    assert e.value.code == "stale_signature"


@pytest.mark.parametrize("change", ["secret", "merchant", "customer", "ts", "upper", "short", "empty", "flip"])
def test_any_change_is_forged(change):
    sig = customer_signature("k" * 43, "m1", "c1", NOW)
    args = {"secret": "k" * 43, "merchant": "m1", "customer_id": "c1", "ts": NOW, "signature": sig}
    args.update({"secret": {"secret": "j" * 43}, "merchant": {"merchant": "m2"},
                 "customer": {"customer_id": "c2"}, "ts": {"ts": NOW + 1},
                 "upper": {"signature": sig.upper()}, "short": {"signature": sig[:-1]},
                 "empty": {"signature": ""},
                 "flip": {"signature": sig[:-1] + ("0" if sig[-1] != "0" else "1")}}[change])
    with pytest.raises(AuthError) as e:
        verify_customer_signature(**args, now=NOW)
    assert e.value.code == "forged_signature" and "k" * 43 not in e.value.message


@pytest.mark.parametrize("signature", ["é" * 64, "ｆ" * 64], ids=["latin", "fullwidth"])
def test_a_non_ascii_signature_is_forged_not_a_crash(signature):
    """`hmac.compare_digest(str, str)` raises TypeError for non-ASCII str. The HTTP schema's
    `^[0-9a-f]{64}$` keeps it out of /auth/customer today; any other caller gets a 500."""
    with pytest.raises(AuthError) as e:
        verify_customer_signature("k", "m1", "c1", NOW, signature, now=NOW)
    assert e.value.code == "forged_signature"


# -- API keys ----------------------------------------------------------------------------------
HEX = "0123456789ab"


@pytest.mark.parametrize("secret", ["A" * 32, "a-_" * 11, "Z" * 128, "_" * 40])
def test_api_keys_parse_at_the_edges(secret):
    assert parse_api_key(f"pdk_{HEX}_{secret}") == (HEX, secret)


@pytest.mark.parametrize("text", [
    "", "pdk_", f"pdk_{HEX}", f"pdk_{HEX}_", f"PDK_{HEX}_{'Z' * 40}", f"pk_{HEX}_{'Z' * 40}",
    f"pdk_{HEX.upper()}_{'Z' * 40}", f"pdk_{HEX[:-1]}_{'Z' * 40}", f"pdk_{HEX}c_{'Z' * 40}",
    f"pdk_0123456789ag_{'Z' * 40}", f"pdk_{HEX}_{'Z' * 31}", f"pdk_{HEX}_{'Z' * 129}",
    f"pdk_{HEX}_{'Z' * 39}+", f"pdk_{HEX}_{'Z' * 39}/", f"pdk_{HEX}_{'Z' * 39}=", f"pdk_{HEX}_{'Z' * 39}.",
    f"pdk_{HEX}_{'é' * 40}", f" pdk_{HEX}_{'Z' * 40}", f"pdk_{HEX}_{'Z' * 40} ", f"pdk_{HEX} {'Z' * 40}",
    f"pdk-{HEX}-{'Z' * 40}", f"Bearer pdk_{HEX}_{'Z' * 40}",
])
def test_malformed_api_keys_are_refused_without_echoing_them(text):
    with pytest.raises(AuthError) as e:
        parse_api_key(text)
    assert e.value.code == "bad_api_key"
    assert "Z" * 20 not in e.value.message and (len(text) < 8 or text not in e.value.message)


def test_a_key_with_a_trailing_newline_is_refused():
    """`_API_KEY.match` with `$` also matches before a final newline: `pdk_..._secret\\n` parses
    (to the same key id and secret, so harmless, but not the documented format)."""
    with pytest.raises(AuthError):
        parse_api_key(f"pdk_{HEX}_{'Z' * 40}\n")


def test_api_secret_hash_is_sha256_hex():
    assert api_secret_hash("Z" * 40) == hashlib.sha256(b"Z" * 40).hexdigest()
    assert api_secret_hash("Z" * 40) != api_secret_hash("Z" * 39 + "Y")


# -- bearer header -----------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["Bearer tok.en.x", "bearer tok.en.x", "BEARER tok.en.x", "Bearer  tok.en.x"])
def test_the_scheme_is_case_insensitive(header):
    assert bearer_token(header) == "tok.en.x"


@pytest.mark.parametrize("header,code", [
    (None, "missing_token"), ("", "missing_token"), ("Bearer", "invalid_token"), ("Bearer ", "invalid_token"),
    ("Basic dXNlcjpwYXNz", "invalid_token"), ("Token abc", "invalid_token"), ("Bearertok", "invalid_token"),
    (" Bearer tok", "invalid_token"), ("Bearer\ttok", "invalid_token"), ("Bearer " + "a" * 5000, "invalid_token"),
])
def test_bad_headers(header, code):
    with pytest.raises(AuthError) as e:
        bearer_token(header)
    assert e.value.code == code
    assert "dXNlcjpwYXNz" not in e.value.message and "a" * 100 not in e.value.message


# -- redact ------------------------------------------------------------------------------------
def test_redact_replaces_every_occurrence_of_every_secret():
    line = "login pw=hunter2-long key=pdk_x retry pw=hunter2-long"
    assert redact(line, "hunter2-long", "pdk_x") == "login pw=*** key=*** retry pw=***"
    assert redact(line) == line and redact(line, "", None) == line  # type: ignore[arg-type]


def test_redact_hides_a_secret_that_contains_another():
    """Secrets are replaced in argument order: when a shorter one is part of a longer one
    (an API key's secret and the whole key), the rest of the longer one is left in the line."""
    key_secret = "Z" * 40
    whole_key = f"pdk_{HEX}_{key_secret}"
    assert redact(f"auth {whole_key}", key_secret, whole_key) == "auth ***"
