"""Who is calling and what they may do: the principal behind a request, resolved once per
request from its bearer token or API key, and checked against the permission matrix.

Tenancy: the merchant of every admin request is the principal's merchant — never a URL or body
field — so a caller can only ever name records of its own merchant.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from quart import current_app, g, request

from storage.records import RecordStore

from .auth import AuthError, Principal, TokenSigner, bearer_token
from .errors import ApiError
from .permissions import Action, Forbidden, require


@dataclass
class Services:
    records: RecordStore
    signer: TokenSigner
    router: Any = None            # actors.router.Router: envelopes to the actor hosts
    hub: Any = None               # gateway.connection.Hub: this gateway's connections
    name: str = "gateway-0"       # how actors address this gateway's connections
    read_log: Any = None          # async (merchant, session, after, upto) -> [(seq, frame)]
    attachments: Any = None       # storage.attachments.AttachmentStore
    query: Any = None             # async (sql, parameters) -> rows, through a ClickHouse writer
    export: Any = None            # async (sql, parameters, format) -> bytes (Parquet, CSV), likewise
    ask_bot: Any = None           # async (merchant, text, context) -> the bot's decision, from a bot worker
    max_connections_per_ip: int = 200
    frames_per_s: int = 20
    widget_sessions_per_ip_per_min: int = 30   # new visitor tokens, and new conversations, a client IP may start


def services() -> Services:
    return current_app.config["PEAKDESK_SERVICES"]


async def current_principal() -> Principal:
    if "principal" not in g:
        g.principal = await _resolve(request.headers.get("Authorization"), request.headers.get("X-Api-Key"))
    return g.principal


async def _resolve(authorization: str | None, api_key: str | None) -> Principal:
    svc = services()
    token = api_key if api_key and not authorization else bearer_token(authorization)
    if token.startswith("pdk_"):
        record = await svc.records.verify_api_key(token)
        if record is None:
            raise AuthError("bad_api_key", "unknown or revoked API key")
        return Principal(kind="apikey", merchant=record["merchant"], id=record["key_id"], role="api")
    principal = svc.signer.verify(token)
    if principal.kind == "agent":
        await _check_agent_current(svc.records, principal)
    return principal


async def resolve_token(token: str) -> Principal:
    """A websocket's `hello` token: people and customers only (API keys are for REST)."""
    if token.startswith("pdk_"):
        raise AuthError("invalid_token", "API keys are for the REST API, not for websockets")
    principal = services().signer.verify(token)
    if principal.kind == "agent":
        await _check_agent_current(services().records, principal)
    return principal


async def _check_agent_current(records: RecordStore, p: Principal) -> None:
    """A token outlives nothing it was issued for: a disabled agent, a changed password or role."""
    try:
        agent = await records.get_agent(p.merchant, p.id)
    except LookupError:
        raise AuthError("revoked_token", "the agent of this token no longer exists") from None
    if not agent.get("enabled", True) or agent.get("token_version", 0) != p.token_version or agent["role"] != p.role:
        raise AuthError("revoked_token", "this token was revoked; log in again")


def authorized(action: Action) -> Callable:
    """Route decorator: the caller must be authenticated and its role allowed `action`; the
    handler receives the principal as `who`."""
    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            who = await current_principal()
            try:
                require(who.role, action)
            except Forbidden as exc:
                raise ApiError(403, "forbidden", str(exc)) from None
            return await fn(*args, who=who, **kwargs)
        wrapper.action = action   # what /openapi.json says of it: who may call (gateway/openapi.py)
        return wrapper
    return decorator


def actor_of(who: Principal) -> str:
    """How audit events name the caller."""
    return f"{who.kind}:{who.id}"
