"""The access token the Graph API is called with.

A non-expiring system-user token is the channel's `access_token`, as is. A 60-day one
(`token_expires`) is renewed while it is still valid — Meta cannot renew an expired token — by
exchanging it for a fresh one (GET /oauth/access_token, grant_type=fb_exchange_token,
set_token_expires_in_60_days=true); the old one stays valid until its own expiry. The renewed
token is kept in memory and in the channel's state, so every gateway shares it; when the API
rejects a token (code 190) and the state holds a newer one (another gateway renewed), that one
is tried.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Callable

import httpx
import orjson

from connectors.base import State
from . import errors
from .config import WhatsAppConfig

DAY = 86400
STATE_KEY = "access_token"
RENEW_PAUSE_S = 3600      # after a failed renewal of a still-valid token, don't try at every send


class Tokens:
    def __init__(self, config: WhatsAppConfig, http: httpx.AsyncClient, state: State | None,
                 clock: Callable[[], float]):
        self.config, self.http, self.state, self.clock = config, http, state, clock
        self.origin = hashlib.sha256(config.access_token.encode()).hexdigest()[:16]   # which configured token
        self.record: dict | None = None       # {"of", "token", "expires_at"}
        self.renew_after = 0.0
        self.renewing = asyncio.Lock()

    async def get(self) -> str:
        if not self.config.token_expires:
            return self.config.access_token
        record = self.record or await self._load()
        if self._fresh(record):
            return record["token"]
        async with self.renewing:             # one renewal at a time; the others take its result
            record = self.record or await self._load()
            return record["token"] if self._fresh(record) else await self._renew(record, self.clock())

    def _fresh(self, record: dict | None) -> bool:
        now = self.clock()
        left = record["expires_at"] - now if record else 0
        return left > 0 and (left > self.config.token_renew_days * DAY or now < self.renew_after)

    async def rejected(self, token: str) -> bool:
        """The API said `token` is invalid or expired: True if there is another one to try."""
        if not self.config.token_expires:
            return False
        self.record = None
        record = await self._load()
        return bool(record) and record["token"] != token and record["expires_at"] > self.clock()

    async def _renew(self, record: dict | None, now: float) -> str:
        alive = record is not None and record["expires_at"] > now
        try:
            token, lifetime = await self._exchange(record["token"] if alive else self.config.access_token)
        except errors.GraphError:
            if not alive:
                raise
            self.renew_after = now + RENEW_PAUSE_S        # keep using it; renew later
            return record["token"]
        self.record = {"of": self.origin, "token": token, "expires_at": now + lifetime}
        if self.state is not None:
            await self.state.set(STATE_KEY, orjson.dumps(self.record).decode())
        return token

    async def _exchange(self, token: str) -> tuple[str, float]:
        params = {"grant_type": "fb_exchange_token", "client_id": self.config.app_id,
                  "client_secret": self.config.app_secret, "set_token_expires_in_60_days": "true",
                  "fb_exchange_token": token}
        try:
            resp = await self.http.get(self.config.url("oauth", "access_token"), params=params,
                                       timeout=self.config.timeout_s)
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, self.config.timeout_s) from None
        if resp.status_code != 200:
            error = errors.from_response(resp)
            raise errors.GraphError(f"renewing the access token: {error.reason}", error.retry, error.code)
        return _token_of(resp)

    async def _load(self) -> dict | None:
        raw = await self.state.get(STATE_KEY) if self.state is not None else None
        try:
            record = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return None
        if not (isinstance(record, dict) and record.get("of") == self.origin and isinstance(record.get("token"), str)
                and isinstance(record.get("expires_at"), (int, float))):
            return None                 # none yet, or of a token the merchant has since replaced
        self.record = record
        return record


def _token_of(resp: httpx.Response) -> tuple[str, float]:
    try:
        body = resp.json()
    except (ValueError, RecursionError):     # RecursionError: JSON nested past the parser's limit
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise errors.GraphError("renewing the access token: the answer has no access_token", True)
    lifetime = body.get("expires_in")
    return token, float(lifetime) if isinstance(lifetime, (int, float)) and lifetime > 0 else 60.0 * DAY
