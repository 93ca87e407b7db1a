"""Webhooks: a merchant's endpoints that hear about changes (ticket.created, ticket.updated),
and their signed delivery.

Keys: `{p}m:{m}:webhook:{id}` (JSON, with the signing secret) and the set `{p}m:{m}:webhooks`.
A change queues one job per subscribed endpoint (storage.jobs) in the change's own MULTI; a
gateway delivers it with

    POST <url>
    Content-Type: application/json
    X-Peakdesk-Event: ticket.updated
    X-Peakdesk-Delivery: <job id — the same on every retry: receivers dedupe by it>
    X-Peakdesk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A 2xx is delivered; anything else (or no answer in `TIMEOUT_S`) is retried with back-off.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid

import httpx
import orjson
from redis.asyncio import Redis

from storage import jobs
from storage.records import NotFound, audit

EVENTS = ("ticket.created", "ticket.updated")
TIMEOUT_S = 5.0
MAX_ENDPOINTS = 20


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and is recent (replays are refused)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        if abs((time.time() if now is None else now) - t) > tolerance_s:
            return False
        expected = sign(secret, body, t).split("v1=", 1)[1]
        return hmac.compare_digest(expected.encode(), parts.get("v1", "").encode("utf-8", "replace"))
    except (ValueError, KeyError, TypeError, OverflowError):   # any header that isn't ours: not a match
        return False


class WebhookStore:
    def __init__(self, redis: Redis, prefix: str, shard: int = 0):
        self.r, self.p, self.shard = redis, prefix, shard

    def _k(self, merchant: str, *parts: str) -> str:
        return f"{self.p}m:{merchant}:" + ":".join(parts)

    async def create(self, merchant: str, url: str, events: list[str], actor: str) -> dict:
        if await self.r.scard(self._k(merchant, "webhooks")) >= MAX_ENDPOINTS:
            raise ValueError(f"webhooks: at most {MAX_ENDPOINTS} endpoints per merchant")
        now = int(time.time() * 1000)
        record = {"webhook_id": uuid.uuid4().hex[:12], "url": url, "events": sorted(set(events)), "enabled": True,
                  "secret": "whsec_" + secrets.token_urlsafe(32), "created_at": now}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k(merchant, "webhook", record["webhook_id"]), orjson.dumps(record))
        pipe.sadd(self._k(merchant, "webhooks"), record["webhook_id"])
        audit(pipe, self.p, self.shard, merchant, "audit.webhook.created", actor, record["webhook_id"],
              {"url": url, "events": record["events"]}, now)
        await pipe.execute()
        return record   # the only time the secret is shown

    async def list(self, merchant: str) -> list[dict]:
        ids = sorted(m.decode() for m in await self.r.smembers(self._k(merchant, "webhooks")))
        raws = await self.r.mget([self._k(merchant, "webhook", i) for i in ids]) if ids else []
        return [orjson.loads(r) for r in raws if r]

    async def get(self, merchant: str, webhook_id: str) -> dict:
        raw = await self.r.get(self._k(merchant, "webhook", webhook_id))
        if raw is None:
            raise NotFound("webhook", webhook_id)
        return orjson.loads(raw)

    async def delete(self, merchant: str, webhook_id: str, actor: str) -> None:
        await self.get(merchant, webhook_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._k(merchant, "webhook", webhook_id))
        pipe.srem(self._k(merchant, "webhooks"), webhook_id)
        audit(pipe, self.p, self.shard, merchant, "audit.webhook.deleted", actor, webhook_id, {},
              int(time.time() * 1000))
        await pipe.execute()


def public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "secret"}


def queue(pipe, prefix: str, merchant: str, endpoints: list[dict], event: str, data: dict, ts: int) -> int:
    """One delivery job per enabled endpoint subscribed to `event`, on the caller's MULTI."""
    n = 0
    for endpoint in endpoints:
        if endpoint.get("enabled", True) and event in endpoint["events"]:
            jobs.enqueue(pipe, prefix, "webhook", merchant, webhook_id=endpoint["webhook_id"], event=event,
                         created_at=ts, data=data, lane=f"{merchant}|{endpoint['webhook_id']}")  # a slow endpoint waits alone
            n += 1
    return n


class Deliverer:
    """The `webhook` job handler: POST the signed body; raise on anything but a 2xx."""

    def __init__(self, store: WebhookStore, client: httpx.AsyncClient | None = None):
        self.store = store
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)

    async def __call__(self, job: dict) -> None:
        try:
            endpoint = await self.store.get(job["merchant"], job["webhook_id"])
        except NotFound:
            return  # deleted since: nobody to tell
        if not endpoint.get("enabled", True):
            return
        body = orjson.dumps({"id": job["id"], "type": job["event"], "created_at": job["created_at"],
                             "merchant": job["merchant"], "data": job["data"]})
        response = await self.client.post(endpoint["url"], content=body, headers={
            "Content-Type": "application/json", "X-Peakdesk-Event": job["event"], "X-Peakdesk-Delivery": job["id"],
            "X-Peakdesk-Signature": sign(endpoint["secret"], body), "User-Agent": "peakdesk-webhooks/1"})
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"{endpoint['url']} answered {response.status_code}")

    async def aclose(self) -> None:
        await self.client.aclose()
