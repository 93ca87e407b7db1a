"""Encryption at rest, end to end on a running peakdesk (gateway, hosts and writer on Ray, Redis,
chDB): after a whole conversation — a customer's contact attributes, messages both ways, an
internal note, a rating with a comment, a ticket — no personal value is found in clear in any raw
Redis value or key, in Redis's append-only file, or in any raw ClickHouse row; the console and the
APIs still show all of it. A data key rotated mid-conversation leaves old and new readable;
shredding the merchant's keys makes all of it unreadable for good."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import redis
import redis.asyncio as aioredis
import trio

from gateway.client import connect
from storage import crypto
from storage.redis_server import start_redis
from tests.gateway_cluster import Peakdesk
from tests.storage_helpers import stored_bytes
from tests.test_reports_api import get, today_range
from tests.test_routing_ws import agent, group, online

pytestmark = pytest.mark.timeout(300)

PREFIX = "ear:"
NAMESPACE = "pd-test-encryption"
# What must never be found in clear: contact fields and bodies, in Chinese and English.
NAME, PHONE, ADDRESS, EMAIL = "欧阳锋锋", "13912345678", "上海市浦东新区世纪大道1088号", "ouyang.feng@example.cn"
ASKED = "我的手机13912345678收不到验证码 where is parcel ZX-88231"
ANSWERED = "已为您加急处理 expedited for Mr Ouyang"
NOTE = "内部备注 VIP complaint escalate"
COMMENT = "客服很耐心 very patient agent"
AFTER_ROTATION = "轮换之后的消息 message after rotation"
TICKET_NOTE = "退款单号 RF-5521 refund address 世纪大道"
SECRETS = (NAME, PHONE, ADDRESS, EMAIL, ASKED, ANSWERED, NOTE, COMMENT, AFTER_ROTATION, TICKET_NOTE,
           "ZX-88231", "Ouyang", "验证码", "RF-5521")


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A Redis of its own: its append-only file then holds this conversation and nothing of other tests."""
    server = start_redis(tmp_path_factory.mktemp("ear-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pd(ray_session, own_redis, tmp_path_factory):
    p = Peakdesk(own_redis.url, tmp_path_factory.mktemp("ear"), NAMESPACE, PREFIX)
    yield p
    p.stop()


def cli(pd: Peakdesk, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "keys", *args, "--redis-url", pd.settings.redis_url,
                           "--prefix", PREFIX], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def conversation(pd):
    g = group(pd)
    agent_id, token = agent(pd, [g])

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            session = await c.open(group=g, entry={"page": f"https://shop.example/u?phone={PHONE}"})
            customer = (await a.until("assigned", session=session))["customer_id"]
            pd.request("PATCH", f"/api/v1/customers/{customer}/attributes",
                       {"attributes": {"name": NAME, "phone": PHONE, "address": ADDRESS, "email": EMAIL}},
                       pd.owner_token)
            await a.subscribe(session)
            await c.send_message(session, "text", {"text": ASKED})
            await a.next_message(session)
            await a.send_message(session, "text", {"text": ANSWERED})
            await a.note(session, NOTE)
            rotated = cli(pd, "rotate", "--merchant", "demo")
            assert rotated.returncode == 0, rotated.stderr
            await trio.sleep(1.5)          # every process re-reads the keys each second in tests
            await c.send_message(session, "text", {"text": AFTER_ROTATION})
            await a.next_message(session)
            ticket = pd.post("/api/v1/tickets", {"title": "refund", "session_id": session, "department": "after_sales",
                                                 "description": TICKET_NOTE}, token)
            await a.close(session)
            await c.until("event", event="csat.invite")
            await c.rate(session, 5, COMMENT)
            await c.until("event", event="csat.rated")
            return session, customer, ticket["ticket_id"], token
    session, customer, ticket_id, token = trio.run(main)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # the writer lingers before it inserts
        counts = pd.post("/api/v1/events/count", {"sessions": [session]}, pd.owner_token)["counts"]
        if counts.get("csat.rated"):
            break
        time.sleep(0.3)
    return {"session": session, "customer": customer, "ticket": ticket_id, "agent_token": token}


def raw_redis(url: str) -> list[bytes]:
    """Every key under our prefix and every value, read by type, as raw bytes."""
    async def dump():
        r = aioredis.from_url(url)
        try:
            return await stored_bytes(r, PREFIX)
        finally:
            await r.aclose()
    return [b for key, values in asyncio.run(dump()).items() for b in (key, *values)]


def clickhouse_rows(pd: Peakdesk) -> list[tuple]:
    """(type, session_id, payload, then every stored column) of each of the merchant's events."""
    writer = ray.get_actor("writer-0", namespace=NAMESPACE)
    return ray.get(writer.query.remote("SELECT type, session_id, payload, * FROM events WHERE merchant_id = 'demo'"))


def in_clear(blobs: list[bytes]) -> set[str]:
    return {s for s in SECRETS for b in blobs if s.encode() in b}


def test_no_personal_value_is_stored_in_clear_in_redis_its_aof_or_clickhouse(pd, conversation, own_redis):
    blobs = raw_redis(pd.settings.redis_url)
    assert len(blobs) > 50
    assert in_clear(blobs) == set()
    aof = [p.read_bytes() for p in Path(own_redis.data_dir).rglob("*.aof*") if p.is_file()]
    assert aof, "the test Redis keeps an append-only file"
    assert in_clear(aof) == set()
    rows = clickhouse_rows(pd)
    types = {r[0] for r in rows}
    assert {"message.sent", "note.added", "csat.rated", "audit.customer.attributes_set", "ticket.created"} <= types
    assert in_clear([repr(r).encode() for r in rows]) == set()
    # what reports read stays readable: who sent, timings, scores
    sent = [json.loads(r[2]) for r in rows if r[0] == "message.sent"]
    assert sent and {p["from"]["kind"] for p in sent} == {"visitor", "agent", "system"}   # system: the ticket notice
    assert any(str(p["content"]["text"]).startswith("pdenc:") for p in sent)


def test_the_console_and_the_apis_still_show_everything(pd, conversation):
    session, customer = conversation["session"], conversation["customer"]

    async def main():
        async with connect(pd.url, conversation["agent_token"]) as a:
            await a.subscribe(session, after=0)     # the history, from the sealed log
            texts = []
            with trio.move_on_after(10):
                while len(texts) < 4:
                    m = await a.next_message(session)
                    texts.append(m["content"]["text"])
            return texts
    assert trio.run(main) == [ASKED, ANSWERED, NOTE, AFTER_ROTATION]
    attrs = pd.request("GET", f"/api/v1/customers/{customer}", None, pd.owner_token)["attributes"]
    assert (attrs["name"], attrs["phone"], attrs["address"], attrs["email"]) == (NAME, PHONE, ADDRESS, EMAIL)
    ticket = pd.request("GET", f"/api/v1/tickets/{conversation['ticket']}", None, pd.owner_token)
    assert ticket["description"] == TICKET_NOTE
    transcript = pd.request("GET", f"/api/v1/tickets/{conversation['ticket']}/transcript", None, pd.owner_token)
    assert ours(transcript["items"]) == [ASKED, ANSWERED, NOTE, AFTER_ROTATION]
    comments = pd.request("GET", "/api/v1/reports/csat_comments?" + today_range(), None, pd.owner_token)
    assert [row[-1] for row in comments["rows"] if row[1] == session] == [COMMENT]
    export = export_jsonl(pd)
    assert ours([json.loads(e["payload"]) for e in export if e["session_id"] == session]) == \
        [ASKED, ANSWERED, NOTE, AFTER_ROTATION]
    # and from ClickHouse once the live log has expired
    redis.Redis.from_url(pd.settings.redis_url).delete(f"{PREFIX}m:demo:log:session:{session}")
    transcript = pd.request("GET", f"/api/v1/tickets/{conversation['ticket']}/transcript", None, pd.owner_token)
    assert ours(transcript["items"]) == [ASKED, ANSWERED, NOTE, AFTER_ROTATION]


def test_a_rotated_key_seals_new_data_and_old_versions_still_open(pd, conversation):
    status = json.loads(cli(pd, "status", "--merchant", "demo").stdout)["items"][0]
    assert status["current"] == 2 and status["versions"] == [1, 2] and status["on_current_master"]
    versions = {int(r[2].split('"text":"pdenc:')[1].split(":")[0]) for r in clickhouse_rows(pd)
                if r[0] == "message.sent" and '"text":"pdenc:' in r[2] and r[1] == conversation["session"]}
    assert versions == {1, 2}      # before and after the rotation, and the console read both above
    bad = cli(pd, "rotate", "--merchant", "nobody")
    assert bad.returncode == 2 and "nobody" in bad.stderr


def ours(items: list[dict]) -> list[str]:
    texts = [(i.get("content") or {}).get("text") for i in items]
    return [t for t in texts if t in (ASKED, ANSWERED, NOTE, AFTER_ROTATION)]


def export_jsonl(pd: Peakdesk) -> list[dict]:
    status, _, body = get(pd, f"/api/v1/events/export?{today_range()}&format=jsonl", pd.owner_token)
    assert status == 200, body
    return [json.loads(line) for line in body.splitlines()]


def test_shredding_the_merchants_keys_erases_its_personal_data_for_good(pd, conversation):
    """Last in this module: the demo merchant's data is unreadable afterwards."""
    session = conversation["session"]
    refused = cli(pd, "shred", "--merchant", "demo")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = cli(pd, "shred", "--merchant", "demo", "--yes")
    assert done.returncode == 0, done.stderr
    time.sleep(1.5)    # every process forgets the keys within the refresh interval
    export = export_jsonl(pd)
    mine = [json.loads(e["payload"]) for e in export if e["session_id"] == session and e["type"] == "message.sent"]
    assert mine and all(p["content"]["text"] == crypto.ERASED for p in mine)
    assert {p["from"]["kind"] for p in mine} == {"visitor", "agent", "system"}     # what reports count remains
    status = pd.request("GET", f"/api/v1/customers/{conversation['customer']}", None, pd.owner_token, expect=404)
    assert status["error"] == "not_found"
    assert json.loads(cli(pd, "status", "--merchant", "demo").stdout)["items"][0]["shredded_at"] > 0
