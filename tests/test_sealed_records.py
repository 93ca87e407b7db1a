"""Encryption at rest (storage/crypto.py) of what customers are and write, store by store, on real
Redis: a customer's name, phone number and address written through a store's normal API is in
no Redis key and no Redis value (every key under the prefix read by its type), while the store
reads it back intact; once the merchant's keys are shredded the store no longer returns it.

After a shred, what a console user sees: customers, tickets and orders are not found (listed
nowhere, NotFound / None when asked for), as if deleted; queued jobs are dropped unrun; a
channel's saved state reads as unset. Channel customers get ids that say nothing of their
platform id (`<channel>:<pseudonym>`), the platform id kept as a sealed contact attribute."""
from __future__ import annotations

import types

import orjson
import pytest
import redis.asyncio as aioredis

from connectors.base import Inbound
from connectors.support import ChannelState
from gateway.channels import Channels
from gateway.context import Services
from storage import crypto, jobs, webhooks
from storage.commerce.base import Order
from storage.commerce.builtin import BuiltinStore
from storage.records import NotFound, RecordStore
from storage.tickets import TicketStore, ticket_settings
from tests.storage_helpers import run, stored_bytes

NAME, PHONE, ADDRESS, EMAIL = "张三 Zhang San", "13800138000", "上海市浦东新区世纪大道100号", "zhangsan@example.com"
PERSONAL = f"{NAME} {PHONE} {ADDRESS} {EMAIL}"
NEEDLES = [n.encode() for n in ("张三", "Zhang San", PHONE, "上海市浦东新区", EMAIL)]
M = "shop-a"


async def _leaks(r: aioredis.Redis, prefix: str) -> list[tuple[bytes, bytes]]:
    """(key, needle) for each personal value found in clear in a key's name or its values."""
    stored = await stored_bytes(r, prefix)
    assert stored, "nothing was written"
    return [(key, n) for key, values in stored.items() for blob in (key, *values) for n in NEEDLES if n in blob]


def _ring(r, prefix: str) -> crypto.Keyring:
    return crypto.keyring(r, prefix)


async def _merchant(r, prefix: str) -> RecordStore:
    store = RecordStore(r, prefix)
    await store.create_merchant(M, "甲店 Shop A", {}, actor="test")
    return store


# -- customer records (storage/records.py) ----------------------------------------------------------

def test_customer_records_are_sealed_and_gone_once_shredded(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        records = await _merchant(r, prefix)
        await records.upsert_customer(M, "c1", display_name=NAME, actor="test")
        await records.set_attributes(M, "c1", {"phone": PHONE, "address": ADDRESS, "email": EMAIL}, actor="test")
        await records.record_visit(M, "c1")
        assert await _leaks(r, prefix) == []
        got = await records.get_customer(M, "c1")
        assert (got["display_name"], got["visit_count"]) == (NAME, 1)
        assert got["attributes"] == {"phone": PHONE, "address": ADDRESS, "email": EMAIL}
        assert [c["attributes"]["address"] for c in (await records.list_customers(M))[0]] == [ADDRESS]
        assert (await records.get_merchant(M))["name"] == "甲店 Shop A"      # other records as they were

        _ring(r, prefix).shred(M)
        with pytest.raises(NotFound):
            await records.get_customer(M, "c1")
        assert await records.list_customers(M) == ([], None)
        with pytest.raises(crypto.Shredded):       # nothing new is written for a shredded merchant
            await records.upsert_customer(M, "c2", display_name=NAME, actor="test")
        await r.aclose()
    run(main())


def test_a_customer_record_stored_before_sealing_still_reads(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        records = await _merchant(r, prefix)
        await r.set(f"{prefix}m:{M}:customer:old", orjson.dumps({"customer_id": "old", "display_name": "老客户",
                                                               "visit_count": 2, "attributes": {}, "updated_at": 0}))
        assert (await records.get_customer(M, "old"))["display_name"] == "老客户"
        assert await records.record_visit(M, "old") == 3
        assert crypto.MAGIC in await r.get(f"{prefix}m:{M}:customer:old")    # sealed when written again
        await r.aclose()
    run(main())


# -- tickets, with their webhook deliveries and the customer's notice (storage/tickets, jobs) --------

def test_tickets_their_webhooks_and_notices_are_sealed_and_gone_once_shredded(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        await _merchant(r, prefix)
        await webhooks.WebhookStore(r, prefix).create(M, "https://example.com/hook",
                                                      ["ticket.created", "ticket.updated"], actor="test")
        store, config = TicketStore(r, prefix), ticket_settings({})
        by = {"kind": "agent", "id": "a1"}
        t = await store.create(M, config, {"title": f"退货 {NAME}", "description": PERSONAL, "department": "after_sales",
                                           "customer_id": "c1", "session_id": "s1"}, by)
        await store.comment(M, config, t["ticket_id"], f"寄回地址 {ADDRESS}，电话 {PHONE}", False, [], by)
        assert await _leaks(r, prefix) == []
        got = await store.get(M, t["ticket_id"])
        assert got["description"] == PERSONAL and PHONE in got["comments"][0]["text"]
        assert (await store.list(M, customer="c1"))["items"][0]["title"] == f"退货 {NAME}"
        queued = [jobs.unpack(_ring(r, prefix), f[b"j"]) for _, f in await r.xrange(jobs.stream(prefix))]
        assert any(j["kind"] == "ticket_notice" and ADDRESS in j["text"] for j in queued)
        assert any(j["kind"] == "webhook" and j["data"]["ticket"]["description"] == PERSONAL for j in queued)

        _ring(r, prefix).shred(M)
        with pytest.raises(NotFound):
            await store.get(M, t["ticket_id"])
        assert await store.list(M) == {"items": [], "total": 0}
        assert await store.list(M, department="after_sales") == {"items": [], "total": 0}
        await r.aclose()
    run(main())


# -- jobs: queued, retried, dead, revived (storage/jobs.py) ----------------------------------------

def test_jobs_are_sealed_through_retries_death_and_revival_and_dropped_once_shredded(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        clock, got = [1000.0], []

        async def send(job):
            got.append(job)
            if len(got) <= jobs.MAX_ATTEMPTS:
                raise RuntimeError(f"platform down for {PHONE}")    # an error that repeats what it was sent
        runner = jobs.Dispatcher(r, prefix, "g1", {"channel_send": send}, clock=lambda: clock[0], block_ms=10)
        await runner.ensure_group()
        pipe = r.pipeline(transaction=True)
        jobs.enqueue(pipe, prefix, "channel_send", M, lane=f"{M}|wa1", external_id="86" + PHONE,
                     content={"text": PERSONAL})
        await pipe.execute()
        for _ in range(jobs.MAX_ATTEMPTS):
            await runner.step()
            assert await _leaks(r, prefix) == []           # in the stream, then the retry set, then dead
            clock[0] += max(jobs.BACKOFF_S) + 1
        assert await jobs.pending(r, prefix) == {"queued": 0, "retrying": 0, "dead": 1}
        dead, = await jobs.dead_jobs(r, prefix)
        assert dead["content"]["text"] == PERSONAL and PHONE in dead["error"] and dead["attempt"] == jobs.MAX_ATTEMPTS
        assert await jobs.revive_dead(r, prefix) == 1
        assert await _leaks(r, prefix) == []
        await runner.step()
        assert got[-1]["external_id"] == "86" + PHONE and got[-1]["content"]["text"] == PERSONAL
        assert got[-1]["attempt"] == 0 and got[-1]["lane"] == f"{M}|wa1"
        assert await jobs.pending(r, prefix) == {"queued": 0, "retrying": 0, "dead": 0}

        pipe = r.pipeline(transaction=True)
        jobs.enqueue(pipe, prefix, "channel_send", M, external_id="86" + PHONE, content={"text": PERSONAL})
        await pipe.execute()
        _ring(r, prefix).shred(M)
        ran = len(got)
        await runner.step()
        assert len(got) == ran and await jobs.pending(r, prefix) == {"queued": 0, "retrying": 0, "dead": 0}
        await r.aclose()
    run(main())


# -- the built-in order store (storage/commerce/builtin.py) ------------------------------------------

def test_orders_are_sealed_and_gone_once_shredded(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        store = BuiltinStore(r, prefix, M)
        order = Order.model_validate({
            "order_id": "TB1", "customer_id": "c1", "status": "shipped", "items": [{"title": "电饭煲 3L"}],
            "tracking": {"order_id": "TB1", "carrier": "顺丰", "events": [
                {"at": "2026-11-12T08:00:00+08:00", "text": f"{NAME} 已签收 {PHONE}", "location": ADDRESS}]}})
        assert await store.save_order(order) is True
        assert await store.save_order(order) is False     # the same order again: read back, not new
        assert await _leaks(r, prefix) == []
        assert (await store.order("c1", "TB1")).tracking.events[0].location == ADDRESS
        assert [o.order_id for o in await store.orders_of("c1")] == ["TB1"]
        assert (await store.tracking("c1", "TB1")).events[0].text == f"{NAME} 已签收 {PHONE}"
        assert await store.order("c2", "TB1") is None      # never another customer's

        _ring(r, prefix).shred(M)
        assert await store.order("c1", "TB1") is None and await store.orders_of("c1") == []
        await r.aclose()
    run(main())


# -- channels: pseudonymous customer ids, sealed contacts and state (gateway/channels.py) ------------

class _Router:
    """Where the gateway would send envelopes to the actor hosts: kept here to look at."""

    def __init__(self):
        self.sent = []

    async def send(self, envelopes):
        self.sent.extend(envelopes)


def test_channel_customers_get_pseudonyms_their_contact_sealed_on_their_record(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        records = await _merchant(r, prefix)
        router = _Router()
        channels = Channels(Services(records=records, signer=types.SimpleNamespace(secret=b"s" * 32), router=router))
        channel = {"channel_id": "wa1", "connector": "whatsapp", "group": ""}
        wa_id = "86" + PHONE
        for n, text in enumerate(["你好", f"地址是 {ADDRESS}"]):
            await channels.deliver(M, channel, Inbound(external_id=wa_id, message_id=f"wamid.{n}", kind="text",
                                                       content={"text": text}, name=NAME))
        customer = channels.store.customer_id(M, "wa1", wa_id)
        assert customer == f"wa1:{_ring(r, prefix).blind(M, wa_id)[:24]}" and PHONE not in customer
        record = await records.get_customer(M, customer)
        assert (record["display_name"], record["attributes"], record["channel"]) == (NAME, {"phone": wa_id}, "whatsapp")
        opened = [e for e in router.sent if e.type == "open"]
        # one conversation (opened again by the second message: no actor here wrote its snapshot)
        assert len({e.target.id for e in opened}) == 1 and opened[0].body["customer_id"] == customer
        assert opened[0].body["outbound"]["external_id"] == wa_id        # the send job's recipient
        assert {e.body["from"]["id"] for e in router.sent if e.type == "message"} == {customer}
        state = ChannelState(r, prefix, M, "wa1")
        await state.set("access_token", f"token-of {NAME}")
        assert await state.get("access_token") == f"token-of {NAME}"
        assert await _leaks(r, prefix) == []

        _ring(r, prefix).shred(M)
        assert await state.get("access_token") is None
        with pytest.raises(NotFound):
            await records.get_customer(M, customer)
        await channels.close()
        await r.aclose()
    run(main())


def test_each_contact_attribute_is_named_for_its_platform(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        records = await _merchant(r, prefix)
        channels = Channels(Services(records=records, signer=types.SimpleNamespace(secret=b"s" * 32), router=_Router()))
        for connector, external, attribute in (("email", EMAIL, "email"), ("wechat_oa", "oABC123", "openid"),
                                               ("wecom_kf", "wmXYZ", "external_userid"), ("webhook", "tb1", "external_id")):
            channel = {"channel_id": connector.replace("_", "-"), "connector": connector, "group": ""}
            await channels.deliver(M, channel, Inbound(external_id=external, message_id="m1", kind="text",
                                                       content={"text": "在吗"}))
            record = await records.get_customer(M, channels.store.customer_id(M, channel["channel_id"], external))
            assert record["attributes"] == {attribute: external}, connector
        assert await _leaks(r, prefix) == []
        await channels.close()
        await r.aclose()
    run(main())
