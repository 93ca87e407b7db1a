"""Getting a token: agents log in with a password; web-widget customers come as anonymous
visitors or with a customer id their merchant's site signed (HMAC, per-merchant secret)."""
from __future__ import annotations

import time
import uuid

from quart import Blueprint
from quart_schema import document_response, security_scheme_blueprint, validate_request

from . import limits
from .auth import AuthError, Principal, verify_customer_signature, verify_password
from .context import services
from .schemas import CustomerIdentityBody, LoginBody, TokenAnswer, VisitorBody

auth_api = Blueprint("auth", __name__, url_prefix="/api/v1/auth")
security_scheme_blueprint(auth_api, [])   # where tokens come from: no token needed (/openapi.json says so)

# Compared against when the username does not exist, so a wrong username costs as long as a
# wrong password and the answer time does not tell which agents exist.
_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY_HASH:
        from .auth import hash_password

        _DUMMY_HASH.append(hash_password(uuid.uuid4().hex))
    return _DUMMY_HASH[0]


def _token_answer(principal: Principal, extra: dict | None = None) -> dict:
    token, expires_at = services().signer.issue(principal)
    return {"token": token, "expires_at": expires_at,
            "principal": {"kind": principal.kind, "merchant": principal.merchant, "id": principal.id,
                          "role": principal.role}, **(extra or {})}


@auth_api.post("/login")
@document_response(TokenAnswer)
@validate_request(LoginBody)
async def login(data: LoginBody):
    records = services().records
    attempts = limits.login_key(records.p, data.merchant, data.username)
    await limits.check(records.r, attempts, limits.LOGIN_FAILURES, "login attempts for this username")
    found = await records.find_login(data.merchant, data.username)
    stored_hash = found[1] if found else _dummy_hash()
    ok = verify_password(stored_hash, data.password)
    if not (found and ok and found[0].get("enabled", True)):
        await limits.count(records.r, attempts, limits.LOGIN_WINDOW_S)
        raise AuthError("bad_credentials", "unknown merchant, username or password")
    await records.r.delete(attempts)
    agent = found[0]
    principal = Principal(kind="agent", merchant=data.merchant, id=agent["agent_id"], role=agent["role"],
                          token_version=agent.get("token_version", 0))
    return _token_answer(principal, {"agent": agent})


@auth_api.post("/visitor")
@document_response(TokenAnswer)
@validate_request(VisitorBody)
async def visitor(data: VisitorBody):
    """A new anonymous visitor: counted per client IP (`widget_sessions_per_ip_per_min`, 429
    `too_many_sessions` with Retry-After past it)."""
    svc = services()
    await svc.records.get_merchant(data.merchant)  # 404 for an unknown merchant
    await limits.take_widget_session(svc, "token", limits.client_ip())
    principal = Principal(kind="visitor", merchant=data.merchant, id=f"v_{uuid.uuid4().hex}", role="customer")
    return _token_answer(principal)


@auth_api.post("/customer")
@document_response(TokenAnswer)
@validate_request(CustomerIdentityBody)
async def customer(data: CustomerIdentityBody):
    records = services().records
    try:
        secret = await records.customer_secret(data.merchant)
    except LookupError:
        raise AuthError("forged_signature", "signature does not match") from None
    verify_customer_signature(secret, data.merchant, data.customer_id, data.ts, data.signature, now=time.time())
    await records.upsert_customer(data.merchant, data.customer_id, channel="web", actor="system")
    principal = Principal(kind="customer", merchant=data.merchant, id=data.customer_id, role="customer")
    return _token_answer(principal)
