"""Channels at the gateway: a platform's webhook in, the connector's messages into conversations,
agents' and the bot's answers out through the platform (a job per message, storage/jobs.py), the
platform's receipts back to the conversation, and pulled platforms (IMAP) polled.

Inbound, per message: the customer is `<channel id>:<pseudonym of the platform id>` (no phone
number or address in key names or ClickHouse columns; agents find the platform id as a contact
attribute of the customer's sealed record: `phone`, `email`, `openid`...); their open
conversation on the channel (per thread) is found or started (the merchant's diversion rules, the channel's
group, the bot); the message goes in with a client id made from the platform's message id, so a
platform's retry is the same message to the session actor and is shown once — and the id is
remembered for 8 days, so a retry days later (a new conversation by then) is dropped too. The platform gets
its answer only after every message is committed: one that fails is retried by the platform.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import types
import uuid

import httpx

from actors.envelope import ActorRef, Envelope
from actors.session_lifecycle import REOPEN_WITHIN_S
from connectors import registry
from connectors.base import Inbound, Outbound, Receipt, SendFailed, WebhookRequest
from connectors.support import ChannelState, MerchantMedia
from storage.actor_store import read_states
from storage.channels import ChannelStore, channel_key
from storage.records import MAX_ATTR_VALUE

from .context import Services

log = logging.getLogger(__name__)
POLL_EVERY_S = 5.0
POLL_LOCK_S = 300           # longer than a poll can take (a mailbox's operations time out in ≤ 60 s)
SEND_TIMEOUT_S = 15.0
DEFAULT_RATE_PER_S = 20     # sends per second per channel unless the connector or the channel says
SEEN_TTL_S = 8 * 86400      # platform message ids remembered: WhatsApp re-sends for up to 7 days
# the customer attribute that holds a platform id, by connector ("external_id" for the others)
CONTACT_ATTRIBUTE = {"whatsapp": "phone", "email": "email", "wechat_oa": "openid", "wecom_kf": "external_userid"}
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""


class Channels:
    """One per gateway: connectors built per channel (and rebuilt when its settings change)."""

    def __init__(self, services: Services):
        self.svc = services
        records = services.records
        self.store = ChannelStore(records.r, records.p, channel_key(services.signer.secret), records.shard)
        self.http = httpx.AsyncClient(timeout=SEND_TIMEOUT_S, follow_redirects=False)
        self._built: dict[tuple[str, str], tuple[int, object]] = {}

    async def close(self) -> None:
        await self.http.aclose()

    async def connector(self, merchant: str, channel: dict):
        key, stamp = (merchant, channel["channel_id"]), channel["updated_at"]
        built = self._built.get(key)
        if built is None or built[0] != stamp:
            cls = registry.load(channel["connector"])
            media = MerchantMedia(self.svc.attachments, merchant) if self.svc.attachments is not None else None
            state = ChannelState(self.store.r, self.store.p, merchant, channel["channel_id"])
            built = self._built[key] = (stamp, cls(cls.Config.model_validate(channel["config"]), self.http, media, state))
        return built[1]

    # -- in ----------------------------------------------------------------------------------------
    async def webhook(self, merchant: str, channel: dict, request: WebhookRequest):
        connector = await self.connector(merchant, channel)
        result = await connector.webhook(request)     # Refused: the caller logs and answers it
        for message in result.inbound:
            await self.deliver(merchant, channel, message)
        await self.receipts(merchant, channel, result.receipts)
        if result.state_updates:     # a cursor past these messages, now that they are in
            state = ChannelState(self.store.r, self.store.p, merchant, channel["channel_id"])
            for name, value in result.state_updates.items():
                await state.set(name, value)
        return result

    async def deliver(self, merchant: str, channel: dict, message: Inbound) -> str:
        """Into the customer's conversation on this channel (started if none is open); the session."""
        digest = hashlib.sha256(f"{channel['channel_id']}\n{message.message_id}".encode()).hexdigest()[:40]
        seen = f"{self.store.p}m:{merchant}:channel:{channel['channel_id']}:seen:{digest}"
        if await self.store.r.exists(seen):   # the platform re-sent one we have (WhatsApp does, for days)
            return ""
        customer = await self._customer(merchant, channel, message)
        session = await self._conversation(merchant, channel, customer, message)
        cid = "ch-" + digest   # and within the conversation, the session drops a repeat by it
        body = {"cid": cid, "kind": message.kind, "content": message.content,
                "from": {"kind": "customer", "id": customer, "role": "customer"},
                "reply_to": message.reply_to, "at_ms": message.at_ms or int(time.time() * 1000)}
        await self.svc.router.send([Envelope(ActorRef("session", merchant, session), "message", body)])
        await self.store.r.set(seen, session, ex=SEEN_TTL_S)
        return session

    async def _customer(self, merchant: str, channel: dict, message: Inbound) -> str:
        """The customer's id (created if new, with their platform id as a contact attribute)."""
        customer = self.store.customer_id(merchant, channel["channel_id"], message.external_id)
        name = CONTACT_ATTRIBUTE.get(channel["connector"], "external_id")
        contact = {name: message.external_id[:MAX_ATTR_VALUE]}
        await self.svc.records.upsert_customer(merchant, customer, channel=channel["connector"],
                                               display_name=message.name or None, attributes=contact, actor="system")
        return customer

    async def _conversation(self, merchant: str, channel: dict, customer: str, message: Inbound) -> str:
        key = self.store.conversation_key(merchant, channel["channel_id"], message.external_id, message.thread)
        r = self.store.r
        current = await r.get(key)
        if current is not None:
            session = current.decode()
            state, = await read_states(r, self.store.p, "session", merchant, [session])
            if state is None:        # claimed, but its opener died before opening it: open it now
                await self._open(merchant, channel, customer, session, message)   # (a second open is a no-op)
                return session
            if state.get("status") != "closed" or time.time() - (state.get("closed_at") or 0) <= REOPEN_WITHIN_S:
                return session                              # open, or closed recently enough to reopen
        session = uuid.uuid4().hex[:24]
        won = await r.set(key, session, nx=True) if current is None else \
            await r.eval(_REPLACE, 1, key, current, session)
        if not won:                                         # another gateway started it just now
            return (await r.get(key)).decode()
        await self._open(merchant, channel, customer, session, message)
        return session

    async def _open(self, merchant: str, channel: dict, customer: str, session: str, message: Inbound) -> None:
        from .ws_actions import arrival

        frame = types.SimpleNamespace(channel=channel["connector"], issue_type=None, entry={}, id=None,
                                      group=channel.get("group") or None)
        body = await arrival(self.svc, merchant, customer, frame)
        body["outbound"] = {"channel_id": channel["channel_id"], "external_id": message.external_id,
                            "thread": message.thread, "reply_to": message.reply_to}
        await self.svc.router.send([Envelope(ActorRef("session", merchant, session), "open", body)])

    async def receipts(self, merchant: str, channel: dict, receipts: list[Receipt]) -> None:
        envs = []
        for receipt in receipts:
            found = await self.store.sent(merchant, channel["channel_id"], receipt.message_id)
            if found is not None:
                session, seq = found
                envs.append(Envelope(ActorRef("session", merchant, session), "delivery",
                                     {"seq": seq, "status": receipt.status, "error": receipt.error}))
        if envs:
            await self.svc.router.send(envs)

    # -- out (the `channel_send` job, queued by the session actor with the message) ------------------
    async def send(self, job: dict) -> None:
        merchant, session, seq = job["merchant"], job["session"], job["seq"]
        try:
            channel = await self.store.get(merchant, job["channel_id"])
            if not channel.get("enabled", True):
                raise SendFailed("the channel is switched off", retry=False)
            connector = await self.connector(merchant, channel)
            await self._throttle(merchant, channel, connector)
            platform_id = await connector.send(Outbound(
                external_id=job["external_id"], kind=job["message_kind"], content=job["content"],
                key=f"{merchant}/{session}/{seq}", thread=job.get("thread", ""), reply_to=job.get("reply_to") or {},
                last_inbound_ms=int(job.get("last_inbound_ms") or 0)))
        except SendFailed as exc:
            if exc.retry:
                raise
            await self._report(merchant, session, seq, "failed", exc.reason)
            return
        except registry.UnknownConnector as exc:
            await self._report(merchant, session, seq, "failed", str(exc))
            return
        await self.store.remember_sent(merchant, job["channel_id"], platform_id, session, seq)
        await self._report(merchant, session, seq, "sent", "", platform_id)

    async def _throttle(self, merchant: str, channel: dict, connector) -> None:
        """At most the channel's (or its connector's) sends per second, across every gateway: a
        counter per second in Redis; over it, this lane waits for the next second."""
        limit = int(channel.get("rate_per_s") or getattr(connector, "rate_per_s", 0) or DEFAULT_RATE_PER_S)
        while True:
            second = int(time.time())
            key = f"{self.store.p}m:{merchant}:channel:{channel['channel_id']}:rate:{second}"
            pipe = self.store.r.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = await pipe.execute()
            if count <= limit:
                return
            await asyncio.sleep(second + 1 - time.time() + 0.01)

    async def gave_up(self, job: dict) -> None:
        """The last retry failed: the agent is told."""
        await self._report(job["merchant"], job["session"], job["seq"], "failed",
                           f"not delivered after retries: {job.get('error', '')}")

    async def _report(self, merchant: str, session: str, seq: int, status: str, error: str, platform_id: str = "") -> None:
        await self.svc.router.send([Envelope(ActorRef("session", merchant, session), "delivery",
                                             {"seq": seq, "status": status, "error": error[:300],
                                              "platform_id": platform_id})])

    # -- pulled platforms ----------------------------------------------------------------------------
    async def poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("channel polling failed")
            await asyncio.sleep(POLL_EVERY_S)

    async def poll_once(self) -> int:
        got = 0
        for merchant, channel_id in await self.store.all_channels():
            try:
                channel = await self.store.get(merchant, channel_id)
            except Exception:   # deleted meanwhile, or its secret changed
                continue
            try:
                connector = await self.connector(merchant, channel) if channel.get("enabled", True) else None
                if connector is not None and hasattr(connector, "poll"):
                    got += await self._poll(merchant, channel, connector)
            except Exception as exc:   # one broken mailbox must not stop the others
                log.warning("channel %s/%s (%s): poll failed: %s: %s", merchant, channel_id, channel["connector"],
                            type(exc).__name__, exc)
        return got

    async def _poll(self, merchant: str, channel: dict, connector) -> int:
        lock = f"{self.store.p}m:{merchant}:channel:{channel['channel_id']}:poll-lock"
        if not await self.store.r.set(lock, self.svc.name or "gateway", nx=True, ex=POLL_LOCK_S):
            return 0      # another gateway is polling it
        try:
            state = ChannelState(self.store.r, self.store.p, merchant, channel["channel_id"])
            cursor = await state.get("poll_cursor") or ""
            messages, cursor = await connector.poll(cursor)
            for message in messages:
                await self.deliver(merchant, channel, message)
            await state.set("poll_cursor", cursor)          # only once every message is in
            if hasattr(connector, "take_receipts"):         # bounces found while polling (mail)
                await self.receipts(merchant, channel, connector.take_receipts())
            return len(messages)
        finally:
            await self.store.r.delete(lock)
