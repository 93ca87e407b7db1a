"""Authentication: who a request or connection is.

- Agents log in with a password (argon2id) and get a signed, expiring token (HS256 JWT).
- Merchants' back-end systems use API keys `pdk_<key id>_<secret>` (only a hash is stored).
- Web-widget customers come anonymous (visitor tokens), or with a customer id their merchant's
  site signed with the merchant's secret (HMAC-SHA256), so nobody can pose as another customer.
Every failure is an `AuthError` with a code the client can act on; no message ever carries the
secret, the password or the token itself.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ALGORITHM = "HS256"
_API_KEY = re.compile(r"pdk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})")  # used with fullmatch: no trailing newline
# C0 and C1 controls, DEL, and the line/paragraph separators: all break log lines and terminals
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class AuthError(Exception):
    """401: codes missing_token, invalid_token, expired_token, revoked_token, bad_credentials,
    forged_signature, stale_signature, bad_api_key."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Principal:
    kind: str          # agent | apikey | customer | visitor
    merchant: str
    id: str
    role: str          # owner | admin | supervisor | agent | api | customer
    token_version: int = 0


# -- passwords ---------------------------------------------------------------------------------
_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)


def use_password_hasher(ph: PasswordHasher) -> None:
    """Tests may use cheaper parameters; production keeps the defaults."""
    global _hasher
    _hasher = ph


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < 10:
        return "must be at least 10 characters"
    if len(password) > 256:
        return "must be at most 256 characters"
    if _CONTROL.search(password):
        return "must not contain control characters"
    return None


# -- tokens ------------------------------------------------------------------------------------
class TokenSigner:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time, ttl_s: int = 12 * 3600):
        if len(secret) < 32:
            raise ValueError("token secret must be at least 32 bytes")
        self.secret, self.clock, self.ttl_s = secret, clock, ttl_s

    def issue(self, p: Principal, ttl_s: int | None = None) -> tuple[str, int]:
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"token ttl_s must be > 0, got {ttl_s}")
        now = int(self.clock())
        exp = now + (self.ttl_s if ttl_s is None else ttl_s)
        claims = {"sub": p.id, "m": p.merchant, "k": p.kind, "r": p.role, "v": p.token_version,
                  "iat": now, "exp": exp, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), exp

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM],
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["sub", "m", "k", "r", "exp"]})
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is not valid") from None
        if not isinstance(claims["exp"], int) or claims["exp"] <= self.clock():
            raise AuthError("expired_token", "the token has expired; log in again")
        version = claims.get("v", 0)
        if not all(isinstance(claims[k], str) for k in ("sub", "m", "k", "r")) \
                or not isinstance(version, int) or isinstance(version, bool):
            raise AuthError("invalid_token", "the token is not valid")
        return Principal(kind=claims["k"], merchant=claims["m"], id=claims["sub"], role=claims["r"],
                         token_version=version)


def bearer_token(header: str | None) -> str:
    if not header:
        raise AuthError("missing_token", "send Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 4096:
        raise AuthError("invalid_token", "the Authorization header must be 'Bearer <token>'")
    return token.strip()


# -- web-widget customer identity ----------------------------------------------------------------
def customer_signature(secret: str, merchant: str, customer_id: str, ts: int) -> str:
    """What the merchant's server computes: hex HMAC-SHA256 of "merchant\\ncustomer_id\\nts"."""
    message = f"{merchant}\n{customer_id}\n{ts}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_customer_signature(secret: str, merchant: str, customer_id: str, ts: int, signature: str,
                              now: float, max_skew_s: int = 600) -> None:
    expected = customer_signature(secret, merchant, customer_id, ts)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise AuthError("forged_signature", "the customer signature does not match")
    if abs(now - ts) > max_skew_s:
        raise AuthError("stale_signature", f"the customer signature is older than {max_skew_s}s; sign again")


# -- API keys ----------------------------------------------------------------------------------
def parse_api_key(text: str) -> tuple[str, str]:
    match = _API_KEY.fullmatch(text)
    if not match:
        raise AuthError("bad_api_key", "API keys look like pdk_<12 hex>_<secret>")
    return match.group(1), match.group(2)


def api_secret_hash(secret: str) -> str:
    # A random 256-bit secret needs no slow hash: sha256 cannot be brute-forced against it.
    return hashlib.sha256(secret.encode()).hexdigest()


def redact(text: str, *secrets: str) -> str:
    # longest first: a secret that contains another (a whole API key and its secret part) goes whole
    for s in sorted(secrets, key=lambda x: len(x or ""), reverse=True):
        if s:
            text = text.replace(s, "***")
    return text
