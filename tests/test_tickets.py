"""Tickets (工单) with real Redis: REST through the Quart app in process, the SLA sweeper on a
test clock, webhooks delivered by the job runner to a local receiver that checks signatures.
The whole path with a conversation, the widget and the console is tests/test_tickets_e2e.py."""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

import cli

from storage import crypto, jobs, outbox, webhooks
from storage.tickets import TicketStore, ticket_settings
from storage.tickets import sla
from storage.redis_server import free_port
from tests.api_client import Api, run
from tests.storage_helpers import opened

SHORT_SLA = {"sla": {"urgent": {"resolve_within_s": 60, "remind_before_s": 20},
                     "high": {"resolve_within_s": 120, "remind_before_s": 30},
                     "normal": {"resolve_within_s": 600}, "low": {"resolve_within_s": 3600}},
             "escalate_to": "finance",
             "fields": [{"name": "refund_amount", "label": "退款金额 Refund", "type": "number"},
                        {"name": "reason", "label": "原因 Reason", "type": "choice", "required": True,
                         "options": ["破损 Damaged", "错发 Wrong item"]}]}
NEW = {"title": "电饭煲内胆破损 Cracked inner pot", "department": "after_sales", "priority": "high",
       "customer_id": "c1", "order_id": "TB20261111001", "type": "质量问题 Quality",
       "fields": {"reason": "破损 Damaged", "refund_amount": 120}}


async def _events(r, prefix: str) -> list:
    """The ticket events in the outbox, their payloads opened (stored sealed: storage/crypto.py)."""
    out = []
    for _, fields in await r.xrange(outbox.stream_key(prefix, 0)):
        out.extend(outbox.decode_batch(fields[b"b"]))
    return opened([e for e in out if e.type.startswith("ticket.")], r, prefix)


async def _jobs(r, prefix: str) -> list[dict]:
    ring = crypto.keyring(r, prefix)
    return [jobs.unpack(ring, f[b"j"]) for _, f in await r.xrange(jobs.stream(prefix))]


async def _tenant(api: Api, merchant: str, tickets: dict | None = SHORT_SLA):
    t = await api.tenant(merchant)
    if tickets is not None:
        status, body = await api.call("PATCH", "/api/v1/merchant", t.tokens["owner"], json={"settings": {"tickets": tickets}})
        assert status == 200, body
    return t


def test_a_ticket_moves_through_its_flow_and_departments_with_every_change_an_event(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await _tenant(api, "shop-a")
            agent = a.agents["agent"]["agent_id"]
            status, t = await api.call("POST", "/api/v1/tickets", a.tokens["agent"], json={**NEW, "assignee": agent})
            assert status == 201, t
            assert (t["number"], t["status"], t["department"], t["assignee"]) == ("T000001", "new", "after_sales", agent)
            assert t["fields"] == {"reason": "破损 Damaged", "refund_amount": 120}
            assert t["sla"]["due_at"] - t["created_at"] == 120_000
            tid = t["ticket_id"]
            _, queue = await api.call("GET", "/api/v1/tickets?department=after_sales", a.tokens["supervisor"])
            assert [x["ticket_id"] for x in queue["items"]] == [tid]
            _, mine = await api.call("GET", "/api/v1/tickets?assignee=me", a.tokens["agent"])
            assert mine["total"] == 1
            for step in ("in_progress", "waiting_customer", "in_progress"):
                status, t = await api.call("PATCH", f"/api/v1/tickets/{tid}", a.tokens["agent"], json={"status": step})
                assert (status, t["status"]) == (200, step)
            # to the warehouse: out of after-sales' queue into the warehouse's, unassigned there
            status, t = await api.call("PATCH", f"/api/v1/tickets/{tid}", a.tokens["agent"], json={"department": "warehouse"})
            assert (t["department"], t["assignee"]) == ("warehouse", "")
            _, queue = await api.call("GET", "/api/v1/tickets?department=after_sales", a.tokens["agent"])
            assert queue["items"] == []
            _, queue = await api.call("GET", "/api/v1/tickets?department=warehouse", a.tokens["agent"])
            assert [x["ticket_id"] for x in queue["items"]] == [tid]
            status, note = await api.call("POST", f"/api/v1/tickets/{tid}/comments", a.tokens["agent"],
                                          json={"text": "仓库确认破损 warehouse confirms", "internal": True})
            assert status == 201 and note["internal"] is True
            status, t = await api.call("PATCH", f"/api/v1/tickets/{tid}", a.tokens["api"], json={"status": "resolved"})
            assert t["status"] == "resolved" and t["resolved_at"]
            _, queue = await api.call("GET", "/api/v1/tickets?department=warehouse", a.tokens["agent"])
            assert queue["items"] == []     # resolved: out of the queue, and no deadline left
            assert await api.r.zcard(f"{prefix}tickets:due") == 0
            _, t = await api.call("GET", f"/api/v1/tickets/{tid}", a.tokens["supervisor"])
            assert t["version"] == 7 and len(t["history"]) == 7 and t["comments"][0]["text"].startswith("仓库")
            events = await _events(api.r, prefix)
            assert [e.type for e in events] == ["ticket.created"] + ["ticket.updated"] * 4 + \
                ["ticket.commented", "ticket.updated"]
            assert [e.seq for e in events] == list(range(1, 8))
            assert {e.merchant_id for e in events} == {"shop-a"} and events[0].customer_id == "c1"
            assert events[4].group_id == "warehouse" and events[4].payload["changes"]["department"] == ["after_sales", "warehouse"]
            assert events[-1].payload["changes"]["status"] == ["in_progress", "resolved"]
    run(main())


def test_bad_ticket_input_is_refused_naming_the_field_and_changes_nothing(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await _tenant(api, "shop-a")
            b = await _tenant(api, "shop-b")
            _, t = await api.call("POST", "/api/v1/tickets", a.tokens["agent"], json=NEW)
            tid = t["ticket_id"]
            before, jobs_before = await api.dump("shop-a"), await _jobs(api.r, prefix)
            bad_creates = [
                ({**NEW, "department": "kitchen"}, "department"),
                ({**NEW, "priority": "whenever"}, "priority"),
                ({**NEW, "fields": {"reason": "lost"}}, "fields.reason"),
                ({**NEW, "fields": {"refund_amount": 5}}, "fields.reason"),
                ({**NEW, "fields": {**NEW["fields"], "refund_amount": "lots"}}, "fields.refund_amount"),
                ({**NEW, "fields": {**NEW["fields"], "colour": "red"}}, "fields.colour"),
                ({**NEW, "title": ""}, "title"),
                ({**NEW, "assignee": b.agents["agent"]["agent_id"]}, "assignee"),
                ({**NEW, "session_id": "no-such-session"}, "session_id"),
                ({**NEW, "surprise": 1}, "surprise"),
            ]
            for body, field in bad_creates:
                status, err = await api.call("POST", "/api/v1/tickets", a.tokens["agent"], json=body)
                assert status == 422 and err["field"] == field, (body, err)
            bad_updates = [({"status": "resolved"}, 409, "status"),       # new → resolved is not in the flow
                           ({"status": "teleported"}, 409, "status"),
                           ({"department": "kitchen"}, 422, "department"),
                           ({}, 422, "body"), ({"fields": {"reason": "lost"}}, 422, "fields.reason")]
            for body, code, field in bad_updates:
                status, err = await api.call("PATCH", f"/api/v1/tickets/{tid}", a.tokens["agent"], json=body)
                assert (status, err["field"]) == (code, field), (body, err)
            status, err = await api.call("POST", f"/api/v1/tickets/{tid}/comments", a.tokens["agent"], json={"text": ""})
            assert status == 422 and err["field"] == "text"
            status, err = await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"], json={"settings": {"tickets": {
                "flow": {"new": ["limbo"]}}}})
            assert status == 422 and "limbo" in err["message"]
            assert await api.dump("shop-a") == before and await _jobs(api.r, prefix) == jobs_before
    run(main())


def test_tickets_never_cross_merchants_or_customers(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await _tenant(api, "shop-a"), await _tenant(api, "shop-b")
            _, ta = await api.call("POST", "/api/v1/tickets", a.tokens["agent"], json=NEW)
            _, tb = await api.call("POST", "/api/v1/tickets", b.tokens["agent"], json={**NEW, "customer_id": "c2"})
            assert ta["number"] == tb["number"] == "T000001"    # each merchant counts its own
            before = await api.dump("shop-a")
            for role in ("agent", "owner", "api"):
                token = b.tokens[role]
                assert (await api.call("GET", f"/api/v1/tickets/{ta['ticket_id']}", token))[0] == 404
                assert (await api.call("PATCH", f"/api/v1/tickets/{ta['ticket_id']}", token,
                                       json={"status": "in_progress"}))[0] == 404
                assert (await api.call("POST", f"/api/v1/tickets/{ta['ticket_id']}/comments", token,
                                       json={"text": "hi"}))[0] == 404
                assert (await api.call("GET", f"/api/v1/tickets/{ta['ticket_id']}/transcript", token))[0] == 404
                _, listed = await api.call("GET", "/api/v1/tickets", token)
                assert [t["ticket_id"] for t in listed["items"]] == [tb["ticket_id"]]
                _, of_c1 = await api.call("GET", "/api/v1/tickets?customer=c1", token)
                assert of_c1["items"] == []
            assert await api.dump("shop-a") == before
            _, of_c2 = await api.call("GET", "/api/v1/tickets?customer=c2", a.tokens["agent"])
            assert of_c2["items"] == []     # c2 has a ticket with B, none with A
            # a conversation of another merchant can't be attached
            status, _ = await api.call("GET", "/api/v1/tickets", None)
            assert status == 401
    run(main())


class _Receiver:
    """A merchant's webhook endpoint: records every delivery; answers `status` (settable)."""

    def __init__(self):
        self.got: list[tuple[dict, bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/peakdesk"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


def test_webhooks_are_signed_retried_and_never_show_internal_notes_or_other_merchants(redis_url, prefix, receiver):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await _tenant(api, "shop-a"), await _tenant(api, "shop-b")
            status, hook = await api.call("POST", "/api/v1/webhooks", a.tokens["owner"],
                                          json={"url": receiver.url, "events": ["ticket.created", "ticket.updated"]})
            assert status == 201 and hook["secret"].startswith("whsec_")
            _, listed = await api.call("GET", "/api/v1/webhooks", a.tokens["admin"])
            assert [w["webhook_id"] for w in listed["items"]] == [hook["webhook_id"]] and "secret" not in listed["items"][0]
            for role in ("agent", "supervisor", "api"):
                assert (await api.call("GET", "/api/v1/webhooks", a.tokens[role]))[0] == 403
            _, theirs = await api.call("GET", "/api/v1/webhooks", b.tokens["owner"])
            assert theirs["items"] == []                                  # another merchant's endpoints: unseen,
            assert (await api.call("DELETE", f"/api/v1/webhooks/{hook['webhook_id']}", b.tokens["owner"]))[0] == 404
            status, err = await api.call("POST", "/api/v1/webhooks", a.tokens["owner"],
                                         json={"url": "ftp://x", "events": ["ticket.created"]})
            assert status == 422 and err["field"] == "url"
            status, err = await api.call("POST", "/api/v1/webhooks", a.tokens["owner"],
                                         json={"url": receiver.url, "events": ["order.paid"]})
            assert status == 422 and err["field"].startswith("events")

            _, t = await api.call("POST", "/api/v1/tickets", a.tokens["agent"], json=NEW)
            await api.call("POST", "/api/v1/tickets", b.tokens["agent"], json=NEW)   # B has no webhook
            await api.call("POST", f"/api/v1/tickets/{t['ticket_id']}/comments", a.tokens["agent"],
                           json={"text": "内部备注 secret note", "internal": True})
            await api.call("POST", f"/api/v1/tickets/{t['ticket_id']}/comments", a.tokens["agent"],
                           json={"text": "已安排换货 replacement on its way"})
            clock = [1_000_000.0]
            runner = jobs.Dispatcher(api.r, prefix, "test", {"webhook": webhooks.Deliverer(
                webhooks.WebhookStore(api.r, prefix))}, clock=lambda: clock[0], block_ms=10)
            await runner.ensure_group()
            await runner.step()
            assert len(receiver.got) == 2
            for headers, body in receiver.got:
                assert webhooks.verify(hook["secret"], headers["x-peakdesk-signature"], body)
                assert not webhooks.verify("whsec_wrong", headers["x-peakdesk-signature"], body)
                assert not webhooks.verify(hook["secret"], headers["x-peakdesk-signature"], body + b" ")
                sent = json.loads(body)
                assert sent["merchant"] == "shop-a" and sent["id"] == headers["x-peakdesk-delivery"]
            created, commented = (json.loads(b) for _, b in receiver.got)
            assert created["type"] == "ticket.created" and created["data"]["ticket"]["number"] == "T000001"
            assert commented["type"] == "ticket.updated" and commented["data"]["change"] == "commented"
            assert commented["data"]["changes"]["comment"]["text"].startswith("已安排换货")
            assert "secret note" not in json.dumps(commented, ensure_ascii=False)   # internal: never sent

            receiver.status = 503     # the merchant's endpoint is down: kept, retried later, same delivery id
            await api.call("PATCH", f"/api/v1/tickets/{t['ticket_id']}", a.tokens["agent"], json={"status": "in_progress"})
            await runner.step()
            assert len(receiver.got) == 3 and await api.r.zcard(jobs.retry_key(prefix)) == 1
            first_try = receiver.got[-1][0]["x-peakdesk-delivery"]
            receiver.status = 200
            await runner.step()
            assert len(receiver.got) == 3            # not due yet
            clock[0] += jobs.BACKOFF_S[0] + 1
            await runner.step()
            await runner.step()
            assert len(receiver.got) == 4 and receiver.got[-1][0]["x-peakdesk-delivery"] == first_try
            assert await jobs.pending(api.r, prefix) == {"queued": 0, "retrying": 0, "dead": 0}

            # down for good: given up after MAX_ATTEMPTS, kept with its error; revived once it is back
            receiver.status = 500
            await api.call("PATCH", f"/api/v1/tickets/{t['ticket_id']}", a.tokens["agent"], json={"priority": "urgent"})
            for _ in range(jobs.MAX_ATTEMPTS):
                await runner.step()
                clock[0] += max(jobs.BACKOFF_S) + 1
            assert await jobs.pending(api.r, prefix) == {"queued": 0, "retrying": 0, "dead": 1}
            dead, = await jobs.dead_jobs(api.r, prefix)
            assert dead["attempt"] == jobs.MAX_ATTEMPTS and "answered 500" in dead["error"]
            tries = len(receiver.got)
            receiver.status = 200
            out = await asyncio.to_thread(CliRunner().invoke, cli.main,
                                          ["jobs", "--retry-dead", "--redis-url", redis_url, "--prefix", prefix])
            assert out.exit_code == 0 and "queued again: 1" in out.output, out.output
            await runner.step()
            assert len(receiver.got) == tries + 1 and receiver.got[-1][0]["x-peakdesk-delivery"] == dead["id"]
            assert await jobs.pending(api.r, prefix) == {"queued": 0, "retrying": 0, "dead": 0}
            await runner.handlers["webhook"].aclose()
    run(main())


def test_sla_reminds_then_escalates_once_and_pauses_while_waiting_on_the_customer(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await _tenant(api, "shop-a")
            merchant = await api.records.get_merchant("shop-a")
            config = ticket_settings(merchant)
            now = [2_000_000.0]
            store = TicketStore(api.r, prefix, clock=lambda: now[0])
            by = {"kind": "agent", "id": a.agents["agent"]["agent_id"]}
            t = await store.create("shop-a", config, {**NEW, "priority": "urgent", "session_id": "s1",
                                                      "assignee": by["id"]}, by)
            paused = await store.create("shop-a", config, {**NEW, "priority": "urgent"}, by)
            now[0] += 10
            await store.update("shop-a", config, paused["ticket_id"], {"status": "in_progress"}, by)
            await store.update("shop-a", config, paused["ticket_id"], {"status": "waiting_customer"}, by)
            assert await sla.sweep(store, api.records) == 0
            now[0] += 35          # 45 s in: 15 s before the 60 s deadline, past the 20 s reminder
            assert await sla.sweep(store, api.records) == 1
            t = await store.get("shop-a", t["ticket_id"])
            assert t["sla"]["reminded"] and not t.get("escalated")
            assert await sla.sweep(store, api.records) == 0      # reminded once
            now[0] += 20          # 65 s: breached
            assert await sla.sweep(store, api.records) == 1
            assert await sla.sweep(store, api.records) == 0
            t = await store.get("shop-a", t["ticket_id"])
            # escalated: urgent stays urgent (the top), to the escalation department, unassigned there
            assert (t["escalated"], t["priority"], t["department"], t["assignee"]) == (True, "urgent", "finance", "")
            p = await store.get("shop-a", paused["ticket_id"])
            assert not p["escalated"] and "reminded" not in p["sla"]     # its clock stood still at 10 s
            await store.update("shop-a", config, paused["ticket_id"], {"status": "in_progress"}, by)
            p = await store.get("shop-a", paused["ticket_id"])
            assert p["sla"]["due_at"] - int(now[0] * 1000) == 50_000
            types = [e.type for e in await _events(api.r, prefix) if e.payload["ticket_id"] == t["ticket_id"]]
            assert types == ["ticket.created", "ticket.sla_reminder", "ticket.escalated"]
            notices = [j for j in await _jobs(api.r, prefix) if j["kind"] == "ticket_notice"]
            assert [n["session_id"] for n in notices] == ["s1", "s1"]       # opened, escalated
            assert "加急" in notices[-1]["text"] and notices[-1]["ticket"]["number"] == t["number"]
            # two sweepers at once act once
            await store.update("shop-a", config, paused["ticket_id"], {"status": "resolved"}, by)
            second = await store.create("shop-a", config, {**NEW, "priority": "urgent"}, by)
            now[0] += 61
            acted = await asyncio.gather(sla.sweep(store, api.records), sla.sweep(store, api.records))
            assert sum(acted) == 2       # the reminder and the breach of `second`, each once
            types = [e.type for e in await _events(api.r, prefix) if e.payload["ticket_id"] == second["ticket_id"]]
            assert sorted(types) == ["ticket.created", "ticket.escalated", "ticket.sla_reminder"]
    run(main())


@pytest.mark.parametrize("header", ["t=1" + "0" * 400 + ",v1=ab", "t=1,v1=签名", "v1=00", "t=,v1=", "garbage", "",
                                    "t=1e9,v1=00", "t=" + str(2**70) + ",v1=00"])
def test_a_signature_header_that_is_not_ours_never_matches_and_never_raises(header):
    assert webhooks.verify("whsec_x", header, b"{}") is False
