"""Tenant records in Redis: merchants, agents, groups, customers, quick replies, API keys.

Why Redis (AOF on): peakdesk already depends on it, every node reaches it, and these records
sit on hot paths (a login, a token check, a customer's attributes shown to the agent) where a
sub-millisecond read matters; they are small (thousands per merchant, not millions of rows).
ClickHouse holds the history: every change here is also an audit event, written to the outbox
in the same MULTI/EXEC as the record, so the record and its audit can't disagree.

Keys: `{p}merchant:{m}` and the set `{p}merchants`; everything else of a merchant under
`{p}m:{m}:` — `agent:{id}`, `agents` (set), `login:{username}` -> agent id, `group:{id}`,
`groups`, `customer:{id}`, `customers` (sorted set by first sight), `reply:{id}`, `replies`,
`apikey:{id}`, `apikeys`, `secret` (customer-signing secret); `{p}apikey:{key id}` -> merchant
(key ids are random and say nothing). Values are JSON. Updates are optimistic (WATCH/MULTI).

Customer records (name, contact attributes: what a customer is) are sealed with the merchant's
data key (storage/crypto.py): Redis holds them only as ciphertext; a record written before
sealing existed reads as it was. Once the merchant's keys are shredded a customer record reads
as not found (`get_customer` raises NotFound, lists leave it out), as if it had been deleted —
the console shows no customer whose data can no longer be read. Customer ids (the key names, the
`customers` set) are not personal: channel customers' ids carry a pseudonym (gateway/channels.py).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from typing import Any, Awaitable, Callable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from storage import crypto, outbox
from storage.events import Event

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ROLES = ("owner", "admin", "supervisor", "agent")
MAX_ATTRIBUTES, MAX_ATTR_KEY, MAX_ATTR_VALUE = 100, 64, 1024
_SECRET_FIELDS = {"password", "password_hash", "secret", "secret_hash", "customer_secret", "api_key"}


class NotFound(LookupError):
    def __init__(self, kind: str, id_: str):
        super().__init__(f"{kind} {id_} not found")
        self.kind, self.id = kind, id_


class Conflict(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _check_id(field: str, value: str) -> None:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{field}: must be 1-64 of a-z 0-9 _ - starting with a letter or digit, got {value!r}")


def audit(pipe, prefix: str, shard: int, merchant: str, type_: str, actor: str, target: str, changes: dict,
          ts: int, **cols) -> None:
    """Queue an audit event (who changed what) into the outbox on `pipe`: callers put it in the
    same MULTI as the change itself, so the record and its audit can't disagree."""
    event = Event(merchant_id=merchant, type=type_, actor_key="admin", seq=0, ts=ts,
                  payload={"actor": actor, "target": target, "changes": _scrub(changes)}, **cols)
    outbox.append(pipe, prefix, shard, [event])


def _scrub(d: dict) -> dict:
    return {k: ("***" if k in _SECRET_FIELDS else v) for k, v in d.items()}


class RecordStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "pd:", clock: Callable[[], float] = time.time,
                 shard: int = 0):
        self.r, self.p, self.clock, self.shard = redis, prefix, clock, shard

    # -- plumbing ------------------------------------------------------------------------------
    def _k(self, merchant: str, *parts: str) -> str:
        return f"{self.p}m:{merchant}:" + ":".join(parts)

    def _now(self) -> int:
        return int(self.clock() * 1000)

    @property
    def ring(self) -> crypto.Keyring:
        return crypto.keyring(self.r, self.p)

    def _dump(self, record: dict, sealed_for: str | None = None) -> bytes:
        """The stored bytes of a record: sealed with `sealed_for`'s data key when given."""
        raw = orjson.dumps(record)
        return self.ring.seal(sealed_for, raw) if sealed_for else raw

    def _load(self, raw: bytes, kind: str, id_: str, sealed_for: str | None = None) -> dict:
        """A stored record; a sealed one whose merchant's keys were shredded is NotFound."""
        if sealed_for:
            try:
                raw = self.ring.open(sealed_for, raw)
            except crypto.Shredded:
                raise NotFound(kind, id_) from None
        return orjson.loads(raw)

    def _load_or_none(self, raw: bytes, kind: str, id_: str, sealed_for: str | None = None) -> dict | None:
        try:
            return self._load(raw, kind, id_, sealed_for)
        except NotFound:   # shredded: as if deleted
            return None

    async def _get(self, key: str, kind: str, id_: str, sealed_for: str | None = None) -> dict:
        raw = await self.r.get(key)
        if raw is None:
            raise NotFound(kind, id_)
        return self._load(raw, kind, id_, sealed_for)

    def _audit(self, pipe, merchant: str, type_: str, actor: str, target: str, changes: dict, **cols) -> None:
        audit(pipe, self.p, self.shard, merchant, type_, actor, target, changes, self._now(), **cols)

    async def _update(self, key: str, kind: str, id_: str, apply: Callable[[dict], Awaitable[dict] | dict],
                      after: Callable[[Any, dict, dict], None], sealed_for: str | None = None) -> dict:
        """Read-modify-write under WATCH; `apply` returns the changes it made to the record,
        `after(pipe, record, changes)` queues the audit (and any index updates); a record sealed
        for a merchant (`sealed_for`) is opened and sealed again."""
        while True:
            async with self.r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(kind, id_)
                    record = self._load(raw, kind, id_, sealed_for)
                    result = apply(record)
                    changed = await result if hasattr(result, "__await__") else result
                    record["updated_at"] = self._now()
                    pipe.multi()
                    pipe.set(key, self._dump(record, sealed_for))
                    after(pipe, record, changed)
                    await pipe.execute()
                    return record
                except WatchError:
                    continue

    async def _create(self, key: str, index: str, member: str, record: dict, kind: str, audit: Callable,
                      extra: Callable[[Any], None] | None = None) -> dict:
        async with self.r.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            if await pipe.exists(key):
                raise Conflict(f"{kind}_id" if kind != "merchant" else "merchant_id", f"{member} exists already")
            pipe.multi()
            pipe.set(key, orjson.dumps(record))
            pipe.sadd(index, member)
            if extra:
                extra(pipe)
            audit(pipe)
            await pipe.execute()
        return record

    async def _list(self, index: str, key_of: Callable[[str], str]) -> list[dict]:
        ids = sorted(m.decode() for m in await self.r.smembers(index))
        if not ids:
            return []
        raws = await self.r.mget([key_of(i) for i in ids])
        return [orjson.loads(r) for r in raws if r]

    # -- merchants -----------------------------------------------------------------------------
    async def create_merchant(self, merchant_id: str, name: str, settings: dict | None, actor: str) -> tuple[dict, str]:
        _check_id("merchant_id", merchant_id)
        now, secret = self._now(), secrets.token_urlsafe(32)
        record = {"merchant_id": merchant_id, "name": name, "settings": settings or {}, "created_at": now,
                  "updated_at": now}
        await self._create(f"{self.p}merchant:{merchant_id}", f"{self.p}merchants", merchant_id, record, "merchant",
                           lambda pipe: self._audit(pipe, merchant_id, "audit.merchant.created", actor, merchant_id,
                                                    {"name": name, "settings": settings or {}}),
                           extra=lambda pipe: pipe.set(self._k(merchant_id, "secret"), secret))
        return record, secret

    async def get_merchant(self, merchant_id: str) -> dict:
        return await self._get(f"{self.p}merchant:{merchant_id}", "merchant", merchant_id)

    async def list_merchants(self) -> list[dict]:
        return await self._list(f"{self.p}merchants", lambda m: f"{self.p}merchant:{m}")

    async def update_merchant(self, merchant_id: str, changes: dict, actor: str) -> dict:
        def apply(record: dict) -> dict:
            if "name" in changes and changes["name"] is not None:
                record["name"] = changes["name"]
            for key, value in (changes.get("settings") or {}).items():
                record["settings"][key] = value
            return changes
        return await self._update(f"{self.p}merchant:{merchant_id}", "merchant", merchant_id, apply,
                                  lambda pipe, rec, ch: self._audit(pipe, merchant_id, "audit.merchant.updated",
                                                                    actor, merchant_id, ch))

    async def customer_secret(self, merchant_id: str) -> str:
        raw = await self.r.get(self._k(merchant_id, "secret"))
        if raw is None:
            raise NotFound("merchant", merchant_id)
        return raw.decode()

    async def rotate_customer_secret(self, merchant_id: str, actor: str) -> str:
        await self.get_merchant(merchant_id)
        secret = secrets.token_urlsafe(32)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k(merchant_id, "secret"), secret)
        self._audit(pipe, merchant_id, "audit.merchant.secret_rotated", actor, merchant_id, {})
        await pipe.execute()
        return secret

    # -- agents --------------------------------------------------------------------------------
    async def _check_groups(self, merchant: str, groups: list[str]) -> None:
        if groups:
            exists = await self.r.smismember(self._k(merchant, "groups"), groups)
            missing = [g for g, ok in zip(groups, exists) if not ok]
            if missing:
                raise ValueError(f"groups: no such group {missing[0]!r}")

    async def create_agent(self, merchant: str, *, username: str, name: str, password_hash: str, role: str,
                           skills: list[str] = (), groups: list[str] = (), max_concurrent: int = 5,
                           actor: str) -> dict:
        await self.get_merchant(merchant)
        if role not in ROLES:
            raise ValueError(f"role: must be one of {ROLES}, got {role!r}")
        await self._check_groups(merchant, list(groups))
        agent_id, now = uuid.uuid4().hex[:12], self._now()
        record = {"agent_id": agent_id, "merchant": merchant, "username": username, "name": name, "role": role,
                  "skills": list(skills), "groups": list(groups), "max_concurrent": max_concurrent,
                  "enabled": True, "token_version": 0, "created_at": now, "updated_at": now}
        login = self._k(merchant, "login", username.lower())
        if not await self.r.set(login, agent_id, nx=True):
            raise Conflict("username", f"{username} is taken")
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k(merchant, "agent", agent_id), orjson.dumps({**record, "password_hash": password_hash}))
        pipe.sadd(self._k(merchant, "agents"), agent_id)
        self._audit(pipe, merchant, "audit.agent.created", actor, agent_id, _public(record), agent_id=agent_id)
        await pipe.execute()
        return record

    async def get_agent(self, merchant: str, agent_id: str) -> dict:
        return _public(await self._get(self._k(merchant, "agent", agent_id), "agent", agent_id))

    async def list_agents(self, merchant: str) -> list[dict]:
        return [_public(a) for a in await self._list(self._k(merchant, "agents"), lambda i: self._k(merchant, "agent", i))]

    async def find_login(self, merchant: str, username: str) -> tuple[dict, str] | None:
        agent_id = await self.r.get(self._k(merchant, "login", username.lower()))
        if agent_id is None:
            return None
        raw = await self.r.get(self._k(merchant, "agent", agent_id.decode()))
        if raw is None:
            return None
        record = orjson.loads(raw)
        return _public(record), record["password_hash"]

    async def update_agent(self, merchant: str, agent_id: str, changes: dict, actor: str) -> dict:
        allowed = {"name", "role", "skills", "groups", "max_concurrent", "enabled"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: cannot be changed here")
        if changes.get("role") is not None and changes["role"] not in ROLES:
            raise ValueError(f"role: must be one of {ROLES}")
        await self._check_groups(merchant, list(changes.get("groups") or []))

        def apply(record: dict) -> dict:
            for k, v in changes.items():
                if v is not None:
                    record[k] = v
            if "role" in changes or changes.get("enabled") is False:
                record["token_version"] += 1  # tokens issued before no longer fit
            return changes
        return _public(await self._update(
            self._k(merchant, "agent", agent_id), "agent", agent_id, apply,
            lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.agent.updated", actor, agent_id, ch,
                                              agent_id=agent_id)))

    async def set_password(self, merchant: str, agent_id: str, password_hash: str, actor: str) -> None:
        def apply(record: dict) -> dict:
            record["password_hash"] = password_hash
            record["token_version"] += 1
            return {}
        await self._update(self._k(merchant, "agent", agent_id), "agent", agent_id, apply,
                           lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.agent.password_changed", actor,
                                                             agent_id, {}, agent_id=agent_id))

    async def disable_agent(self, merchant: str, agent_id: str, actor: str) -> dict:
        def apply(record: dict) -> dict:
            record["enabled"] = False
            record["token_version"] += 1
            return {"enabled": False}
        return _public(await self._update(
            self._k(merchant, "agent", agent_id), "agent", agent_id, apply,
            lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.agent.disabled", actor, agent_id, ch,
                                              agent_id=agent_id)))

    # -- groups --------------------------------------------------------------------------------
    async def create_group(self, merchant: str, *, group_id: str, name: str, routing: dict | None, actor: str) -> dict:
        _check_id("group_id", group_id)
        await self.get_merchant(merchant)
        now = self._now()
        record = {"group_id": group_id, "name": name, "routing": routing or {}, "created_at": now, "updated_at": now}
        return await self._create(self._k(merchant, "group", group_id), self._k(merchant, "groups"), group_id, record,
                                  "group", lambda pipe: self._audit(pipe, merchant, "audit.group.created", actor,
                                                                    group_id, record, group_id=group_id))

    async def get_group(self, merchant: str, group_id: str) -> dict:
        return await self._get(self._k(merchant, "group", group_id), "group", group_id)

    async def list_groups(self, merchant: str) -> list[dict]:
        return await self._list(self._k(merchant, "groups"), lambda i: self._k(merchant, "group", i))

    async def update_group(self, merchant: str, group_id: str, changes: dict, actor: str) -> dict:
        def apply(record: dict) -> dict:
            record.update({k: v for k, v in changes.items() if v is not None and k in ("name", "routing")})
            return changes
        return await self._update(self._k(merchant, "group", group_id), "group", group_id, apply,
                                  lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.group.updated", actor,
                                                                    group_id, ch, group_id=group_id))

    async def delete_group(self, merchant: str, group_id: str, actor: str) -> None:
        await self.get_group(merchant, group_id)
        members = [a["agent_id"] for a in await self.list_agents(merchant) if group_id in a["groups"]]
        if members:
            raise ValueError(f"group: {group_id} still has agents ({', '.join(members[:5])}); move them first")
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._k(merchant, "group", group_id))
        pipe.srem(self._k(merchant, "groups"), group_id)
        self._audit(pipe, merchant, "audit.group.deleted", actor, group_id, {}, group_id=group_id)
        await pipe.execute()

    # -- customers -----------------------------------------------------------------------------
    async def upsert_customer(self, merchant: str, customer_id: str, *, channel: str = "web",
                              display_name: str | None = None, attributes: dict | None = None, actor: str) -> dict:
        """The customer's record, created if new (with `attributes`, such as a channel's contact)."""
        key, now = self._k(merchant, "customer", customer_id), self._now()
        record = {"customer_id": customer_id, "channel": channel, "display_name": display_name or "",
                  "visit_count": 0, "first_seen": now, "last_seen": now, "attributes": dict(attributes or {}),
                  "created_at": now, "updated_at": now}
        if await self.r.set(key, self._dump(record, merchant), nx=True):
            await self.r.zadd(self._k(merchant, "customers"), {customer_id: now}, nx=True)
            return record
        return await self.get_customer(merchant, customer_id)

    async def get_customer(self, merchant: str, customer_id: str) -> dict:
        """The customer's record; NotFound if there is none or its merchant's keys were shredded."""
        return await self._get(self._k(merchant, "customer", customer_id), "customer", customer_id, merchant)

    async def list_customers(self, merchant: str, cursor: int = 0, limit: int = 50) -> tuple[list[dict], int | None]:
        ids = [i.decode() for i in await self.r.zrange(self._k(merchant, "customers"), cursor, cursor + limit - 1)]
        raws = await self.r.mget([self._k(merchant, "customer", i) for i in ids]) if ids else []
        items = [self._load_or_none(raw, "customer", i, merchant) for i, raw in zip(ids, raws) if raw]
        return [c for c in items if c is not None], (cursor + limit if len(ids) == limit else None)

    async def record_visit(self, merchant: str, customer_id: str) -> int:
        def apply(record: dict) -> dict:
            record["visit_count"] += 1
            record["last_seen"] = self._now()
            return {}

        def after(pipe, record, _):
            outbox.append(pipe, self.p, self.shard, [Event(
                merchant_id=merchant, type="customer.visited", actor_key="admin", seq=0, ts=self._now(),
                customer_id=customer_id, payload={"visit_count": record["visit_count"]})])
        await self.upsert_customer(merchant, customer_id, actor="system")
        record = await self._update(self._k(merchant, "customer", customer_id), "customer", customer_id, apply, after,
                                    sealed_for=merchant)
        return record["visit_count"]

    async def set_attributes(self, merchant: str, customer_id: str, attributes: dict, actor: str) -> dict:
        _check_attributes(attributes)
        await self.get_merchant(merchant)
        await self.upsert_customer(merchant, customer_id, actor=actor)

        def apply(record: dict) -> dict:
            merged = {**record["attributes"], **attributes}
            merged = {k: v for k, v in merged.items() if v is not None}
            if len(merged) > MAX_ATTRIBUTES:
                raise ValueError(f"attributes: at most {MAX_ATTRIBUTES} per customer")
            record["attributes"] = merged
            return attributes
        return await self._update(self._k(merchant, "customer", customer_id), "customer", customer_id, apply,
                                  lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.customer.attributes_set",
                                                                    actor, customer_id, ch, customer_id=customer_id),
                                  sealed_for=merchant)

    # -- quick replies -------------------------------------------------------------------------
    async def create_quick_reply(self, merchant: str, *, owner: str | None, shortcut: str, text: str,
                                 category: str = "", actor: str) -> dict:
        if owner is not None:
            await self.get_agent(merchant, owner)
        taken = [q for q in await self._all_replies(merchant) if q["owner"] == owner and q["shortcut"] == shortcut]
        if taken:
            raise Conflict("shortcut", f"{shortcut} is taken")
        reply_id, now = uuid.uuid4().hex[:12], self._now()
        record = {"reply_id": reply_id, "owner": owner, "shortcut": shortcut, "text": text, "category": category,
                  "created_at": now, "updated_at": now}
        return await self._create(self._k(merchant, "reply", reply_id), self._k(merchant, "replies"), reply_id,
                                  record, "reply", lambda pipe: self._audit(pipe, merchant, "audit.quick_reply.created",
                                                                            actor, reply_id, record))

    async def _all_replies(self, merchant: str) -> list[dict]:
        return await self._list(self._k(merchant, "replies"), lambda i: self._k(merchant, "reply", i))

    async def list_quick_replies(self, merchant: str, agent_id: str | None = None, query: str | None = None) -> list[dict]:
        items = [q for q in await self._all_replies(merchant) if q["owner"] is None or q["owner"] == agent_id]
        if query:
            needle = query.casefold()
            items = [q for q in items if needle in q["shortcut"].casefold() or needle in q["text"].casefold()]
        return sorted(items, key=lambda q: (q["owner"] is not None, q["shortcut"]))

    async def get_quick_reply(self, merchant: str, reply_id: str) -> dict:
        return await self._get(self._k(merchant, "reply", reply_id), "quick_reply", reply_id)

    async def update_quick_reply(self, merchant: str, reply_id: str, changes: dict, actor: str) -> dict:
        def apply(record: dict) -> dict:
            record.update({k: v for k, v in changes.items() if v is not None and k in ("shortcut", "text", "category")})
            return changes
        return await self._update(self._k(merchant, "reply", reply_id), "quick_reply", reply_id, apply,
                                  lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.quick_reply.updated",
                                                                    actor, reply_id, ch))

    async def delete_quick_reply(self, merchant: str, reply_id: str, actor: str) -> None:
        await self.get_quick_reply(merchant, reply_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._k(merchant, "reply", reply_id))
        pipe.srem(self._k(merchant, "replies"), reply_id)
        self._audit(pipe, merchant, "audit.quick_reply.deleted", actor, reply_id, {})
        await pipe.execute()

    # -- API keys ------------------------------------------------------------------------------
    async def create_api_key(self, merchant: str, *, name: str, actor: str) -> tuple[dict, str]:
        await self.get_merchant(merchant)
        key_id, secret, now = uuid.uuid4().hex[:12], secrets.token_urlsafe(32), self._now()
        record = {"key_id": key_id, "merchant": merchant, "name": name, "revoked": False, "created_at": now,
                  "updated_at": now}
        stored = {**record, "secret_hash": hashlib.sha256(secret.encode()).hexdigest()}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k(merchant, "apikey", key_id), orjson.dumps(stored))
        pipe.sadd(self._k(merchant, "apikeys"), key_id)
        pipe.set(f"{self.p}apikey:{key_id}", merchant)
        self._audit(pipe, merchant, "audit.api_key.created", actor, key_id, {"name": name})
        await pipe.execute()
        return record, f"pdk_{key_id}_{secret}"

    async def verify_api_key(self, plaintext: str) -> dict | None:
        match = re.match(r"^pdk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})$", plaintext or "")
        if not match:
            return None
        key_id, secret = match.groups()
        merchant = await self.r.get(f"{self.p}apikey:{key_id}")
        raw = await self.r.get(self._k(merchant.decode(), "apikey", key_id)) if merchant else None
        if raw is None:
            return None
        stored = orjson.loads(raw)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if stored["revoked"] or not hmac.compare_digest(digest, stored["secret_hash"]):
            return None
        return {k: v for k, v in stored.items() if k != "secret_hash"}

    async def list_api_keys(self, merchant: str) -> list[dict]:
        keys = await self._list(self._k(merchant, "apikeys"), lambda i: self._k(merchant, "apikey", i))
        return [{k: v for k, v in key.items() if k != "secret_hash"} for key in keys]

    async def revoke_api_key(self, merchant: str, key_id: str, actor: str) -> None:
        def apply(record: dict) -> dict:
            record["revoked"] = True
            return {"revoked": True}
        await self._update(self._k(merchant, "apikey", key_id), "api_key", key_id, apply,
                           lambda pipe, rec, ch: self._audit(pipe, merchant, "audit.api_key.revoked", actor, key_id, ch))


def _public(agent: dict) -> dict:
    return {k: v for k, v in agent.items() if k != "password_hash"}


def _check_attributes(attributes: dict) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"attributes: at most {MAX_ATTRIBUTES} per customer")
    for key, value in attributes.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_ATTR_KEY:
            raise ValueError(f"attributes.{key}: keys are 1-{MAX_ATTR_KEY} characters")
        if isinstance(value, str) and len(value) > MAX_ATTR_VALUE:
            raise ValueError(f"attributes.{key}: values are at most {MAX_ATTR_VALUE} characters")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"attributes.{key}: must be a string, number, boolean or null")
