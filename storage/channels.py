"""A merchant's channels: which connector (wechat_oa, whatsapp, email, webhook, ...), its
settings and credentials — encrypted at rest — and which group its conversations start in.

Keys: `{p}m:{m}:channel:{id}` (JSON; `config` is an AES-GCM token), `{p}m:{m}:channels` (set),
`{p}channels` (set of "merchant|id", what the gateways' pollers walk),
`{p}m:{m}:channel:{id}:conv:{pseudonym}` → the session of a customer (and thread) on the channel,
`{p}m:{m}:channel:{id}:out:{platform message id}` → "session|seq" (receipts find their message),
`{p}m:{m}:channel:{id}:state` (the connector's own cursors and tokens, connectors/support.py).

Credentials are encrypted with a key derived (HKDF-SHA256) from the cluster's secret
(PEAKDESK_SECRET or the data dir's secret file): a Redis dump alone reveals none of them.
No key name holds a customer's platform id (a phone number, an address): conversations are
found by its pseudonym, an HMAC with the merchant's index key (storage/crypto.py `blind`).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import uuid

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

from storage import crypto
from storage.records import Conflict, NotFound, audit

MAX_CHANNELS = 50
OUT_TTL_S = 7 * 86400
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SECRET = re.compile(r"secret|token|password|key|aes", re.I)


def channel_key(cluster_secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"peakdesk", info=b"channel credentials v1").derive(
        cluster_secret)


def redact(config: dict) -> dict:
    """What the admin API shows: credentials as "***" (a PATCH that keeps "***" keeps them)."""
    return {k: ("***" if _SECRET.search(k) and v not in (None, "") else
                redact(v) if isinstance(v, dict) else v) for k, v in config.items()}


def unredact(new: dict, old: dict) -> dict:
    return {k: (old.get(k) if v == "***" else unredact(v, old.get(k) or {}) if isinstance(v, dict) else v)
            for k, v in new.items()}


class ChannelStore:
    def __init__(self, redis: Redis, prefix: str, key: bytes, shard: int = 0):
        self.r, self.p, self.shard = redis, prefix, shard
        self.aead = AESGCM(key)

    def _k(self, merchant: str, *parts: str) -> str:
        return f"{self.p}m:{merchant}:" + ":".join(parts)

    def _seal(self, merchant: str, channel_id: str, config: dict) -> str:
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, orjson.dumps(config), f"{merchant}|{channel_id}".encode())
        return base64.b64encode(nonce + sealed).decode()

    def _open(self, merchant: str, channel_id: str, token: str) -> dict:
        raw = base64.b64decode(token)
        return orjson.loads(self.aead.decrypt(raw[:12], raw[12:], f"{merchant}|{channel_id}".encode()))

    # -- records ---------------------------------------------------------------------------------
    async def create(self, merchant: str, *, connector: str, name: str, group: str, config: dict, actor: str,
                     channel_id: str | None = None, rate_per_s: int | None = None) -> dict:
        channel_id = channel_id or uuid.uuid4().hex[:12]
        if not _ID.match(channel_id):
            raise ValueError(f"channel_id: 1-32 of a-z 0-9 _ - starting with a letter or digit, got {channel_id!r}")
        if await self.r.scard(self._k(merchant, "channels")) >= MAX_CHANNELS:
            raise ValueError(f"channels: at most {MAX_CHANNELS} per merchant")
        now = int(time.time() * 1000)
        record = {"channel_id": channel_id, "connector": connector, "name": name, "group": group, "enabled": True,
                  "rate_per_s": rate_per_s,
                  "created_at": now, "updated_at": now, "config": self._seal(merchant, channel_id, config)}
        key = self._k(merchant, "channel", channel_id)
        if not await self.r.set(key, orjson.dumps(record), nx=True):
            raise Conflict("channel_id", f"{channel_id} exists already")
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(self._k(merchant, "channels"), channel_id)
        pipe.sadd(f"{self.p}channels", f"{merchant}|{channel_id}")
        audit(pipe, self.p, self.shard, merchant, "audit.channel.created", actor, channel_id,
              {"connector": connector, "name": name, "group": group, "config": redact(config)}, now)
        await pipe.execute()
        return {**record, "config": config}

    async def get(self, merchant: str, channel_id: str) -> dict:
        """The channel with its config decrypted."""
        raw = await self.r.get(self._k(merchant, "channel", channel_id))
        if raw is None:
            raise NotFound("channel", channel_id)
        record = orjson.loads(raw)
        return {**record, "config": self._open(merchant, channel_id, record["config"])}

    async def list(self, merchant: str) -> list[dict]:
        ids = sorted(m.decode() for m in await self.r.smembers(self._k(merchant, "channels")))
        return [await self.get(merchant, i) for i in ids]

    async def update(self, merchant: str, channel_id: str, changes: dict, actor: str) -> dict:
        record = await self.get(merchant, channel_id)
        for field in ("name", "group", "enabled", "rate_per_s", "config"):
            if changes.get(field) is not None:
                record[field] = changes[field]
        record["updated_at"] = int(time.time() * 1000)
        stored = {**record, "config": self._seal(merchant, channel_id, record["config"])}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k(merchant, "channel", channel_id), orjson.dumps(stored))
        audit(pipe, self.p, self.shard, merchant, "audit.channel.updated", actor, channel_id,
              {k: (redact(v) if k == "config" else v) for k, v in changes.items() if v is not None}, record["updated_at"])
        await pipe.execute()
        return record

    async def delete(self, merchant: str, channel_id: str, actor: str) -> None:
        await self.get(merchant, channel_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._k(merchant, "channel", channel_id), self._k(merchant, "channel", channel_id, "state"))
        pipe.srem(self._k(merchant, "channels"), channel_id)
        pipe.srem(f"{self.p}channels", f"{merchant}|{channel_id}")
        audit(pipe, self.p, self.shard, merchant, "audit.channel.deleted", actor, channel_id, {}, int(time.time() * 1000))
        await pipe.execute()

    async def all_channels(self) -> list[tuple[str, str]]:
        return [tuple(m.decode().split("|", 1)) for m in await self.r.smembers(f"{self.p}channels")]

    # -- conversations and sent messages ---------------------------------------------------------
    @property
    def ring(self) -> crypto.Keyring:
        return crypto.keyring(self.r, self.p)

    def customer_id(self, merchant: str, channel_id: str, external_id: str) -> str:
        """The customer of a platform id on a channel: `<channel id>:<pseudonym>` (24 hex), the
        same for the same platform id, saying nothing of it."""
        return f"{channel_id}:{self.ring.blind(merchant, external_id)[:24]}"

    def conversation_key(self, merchant: str, channel_id: str, external_id: str, thread: str) -> str:
        pseudonym = self.ring.blind(merchant, f"{external_id}\n{thread}")
        return self._k(merchant, "channel", channel_id, "conv", pseudonym)

    async def remember_sent(self, merchant: str, channel_id: str, platform_id: str, session: str, seq: int) -> None:
        await self.r.set(self._k(merchant, "channel", channel_id, "out", _short(platform_id)), f"{session}|{seq}",
                         ex=OUT_TTL_S)

    async def sent(self, merchant: str, channel_id: str, platform_id: str) -> tuple[str, int] | None:
        raw = await self.r.get(self._k(merchant, "channel", channel_id, "out", _short(platform_id)))
        if raw is None:
            return None
        session, seq = raw.decode().split("|")
        return session, int(seq)


def _short(platform_id: str) -> str:
    return platform_id if len(platform_id) <= 64 and ":" not in platform_id else \
        hashlib.sha256(platform_id.encode()).hexdigest()[:40]
