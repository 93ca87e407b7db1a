"""A real admin API for tests: the Quart app with its record store on the test Redis, driven
in process through Quart's test client. Two merchants, A and B, each with one person per role
and an API key."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis

from argon2 import PasswordHasher

from gateway.app import create_app
from gateway.auth import TokenSigner, hash_password, use_password_hasher
from gateway.context import Services
from storage.records import RecordStore

# Cheap argon2 parameters for tests only: hashing is not what they test, and the defaults cost
# ~50 ms a hash. Production keeps the library's defaults (gateway/auth.py).
use_password_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))

SECRET = b"k" * 48
PASSWORD = "correct horse battery"
ROLES = ("owner", "admin", "supervisor", "agent")


@dataclass
class Tenant:
    merchant: str
    customer_secret: str = ""
    agents: dict[str, dict] = field(default_factory=dict)   # role -> agent record
    tokens: dict[str, str] = field(default_factory=dict)    # role (and "api") -> bearer
    api_key: str = ""


class Api:
    def __init__(self, redis_url: str, prefix: str):
        self.redis_url, self.prefix = redis_url, prefix

    async def __aenter__(self) -> "Api":
        self.r = aioredis.from_url(self.redis_url)
        self.records = RecordStore(self.r, self.prefix)
        self.app = create_app({}, services=Services(self.records, TokenSigner(SECRET)))
        self._ctx = self.app.test_app()
        self.test_app = await self._ctx.__aenter__()
        self.client = self.test_app.test_client()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._ctx.__aexit__(*exc)
        await self.r.aclose()

    async def call(self, method: str, path: str, token: str | None = None, json=None, headers=None, data=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        kwargs = {"headers": h}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        resp = await getattr(self.client, method.lower())(path, **kwargs)
        raw = await resp.get_data()
        return resp.status_code, (orjson.loads(raw) if raw else None)

    async def tenant(self, merchant: str) -> Tenant:
        t = Tenant(merchant)
        _, t.customer_secret = await self.records.create_merchant(merchant, f"Shop {merchant}", None, actor="test")
        await self.records.create_group(merchant, group_id="presales", name="售前", routing=None, actor="test")
        for role in ROLES:
            t.agents[role] = await self.records.create_agent(
                merchant, username=f"{role}1", name=f"{role} 一号", password_hash=hash_password(PASSWORD), role=role,
                skills=[], groups=["presales"], max_concurrent=5, actor="test")
            status, body = await self.call("POST", "/api/v1/auth/login",
                                           json={"merchant": merchant, "username": f"{role}1", "password": PASSWORD})
            assert status == 200, body
            t.tokens[role] = body["token"]
        _, t.api_key = await self.records.create_api_key(merchant, name="OMS", actor="test")
        t.tokens["api"] = t.api_key
        return t

    async def dump(self, merchant: str) -> dict:
        """Every Redis key of a merchant with its value: 'nothing changed' means this is equal."""
        out = {}
        async for key in self.r.scan_iter(match=f"{self.prefix}m:{merchant}:*"):
            out[key] = await _value(self.r, key)
        return out


async def _value(r, key):
    kind = (await r.type(key)).decode()
    if kind == "string":
        return await r.get(key)
    if kind == "hash":
        return await r.hgetall(key)
    if kind == "set":
        return sorted(await r.smembers(key))
    if kind == "zset":
        return await r.zrange(key, 0, -1, withscores=True)
    if kind == "list":
        return await r.lrange(key, 0, -1)
    if kind == "stream":
        return await r.xrange(key)
    return kind


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))
