"""Tickets (工单) in Redis: a problem handed from the chat to a department and followed to the end.

Keys under `{p}m:{m}:` — `ticket:{id}` (JSON, with its comments), `tickets` (sorted set by
creation), `tickets:open:{department}` (the department's queue: open tickets, most urgent and
soonest due first), `tickets:cust:{customer}`, `tickets:number` (the counter behind "T000123");
and, across merchants, `{p}tickets:due` — SLA deadlines (`{m}|{id}|remind` and `…|breach`,
scored by their time in ms) that the gateways' sweepers act on (storage.tickets.sla).

Every change is one MULTI/EXEC holding the ticket, its indexes, its event (`ticket.*`, to
ClickHouse through the outbox), its webhook deliveries and the customer's chat notice
(storage.jobs): none happens without the others. Writes are optimistic (WATCH on the ticket).

A ticket (title, description, fields, comments: what customers and agents wrote) is stored
sealed with its merchant's data key (storage/crypto.py); the indexes hold only ids, statuses and
departments. A ticket stored before sealing existed reads as it was. Once the merchant's keys
are shredded its tickets read as gone: `get` raises NotFound, lists leave them out, their SLA
deadlines are dropped when due.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from storage import crypto, jobs, outbox, webhooks
from storage.events import Event
from storage.records import NotFound

from .config import PRIORITIES, TicketSettings

MAX_COMMENTS = 500
MAX_ATTACHMENTS = 20
_RANK = {p: i for i, p in enumerate(reversed(PRIORITIES))}   # urgent 0 … low 3


class TicketError(ValueError):
    """A change the ticket can't take; `field` names what is wrong (422/409 over REST)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.status = field, status


def due_key(prefix: str) -> str:
    return f"{prefix}tickets:due"


class TicketStore:
    def __init__(self, redis: Redis, prefix: str = "pd:", shard: int = 0, clock: Callable[[], float] = time.time):
        self.r, self.p, self.shard, self.clock = redis, prefix, shard, clock
        self.hooks = webhooks.WebhookStore(redis, prefix, shard)

    def _k(self, merchant: str, *parts: str) -> str:
        return f"{self.p}m:{merchant}:" + ":".join(parts)

    def _now(self) -> int:
        return int(self.clock() * 1000)

    @property
    def ring(self) -> crypto.Keyring:
        return crypto.keyring(self.r, self.p)

    def _load(self, merchant: str, ticket_id: str, raw: bytes | None) -> dict:
        """A stored ticket; NotFound if there is none or its merchant's keys were shredded."""
        if raw is None:
            raise NotFound("ticket", ticket_id)
        try:
            return orjson.loads(self.ring.open(merchant, raw))
        except crypto.Shredded:
            raise NotFound("ticket", ticket_id) from None

    def _loaded(self, merchant: str, ids: list, raws: list) -> list[dict]:
        out = []
        for ticket_id, raw in zip(ids, raws):
            try:
                out.append(self._load(merchant, ticket_id.decode(), raw))
            except NotFound:
                continue
        return out

    # -- reading ---------------------------------------------------------------------------------
    async def get(self, merchant: str, ticket_id: str) -> dict:
        return self._load(merchant, ticket_id, await self.r.get(self._k(merchant, "ticket", ticket_id)))

    async def list(self, merchant: str, *, department: str | None = None, customer: str | None = None,
                   status: str | None = None, assignee: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        """A department's queue (open tickets, most urgent first), a customer's tickets, or all
        (newest first) — then filtered by status and assignee."""
        if department:
            ids = await self.r.zrange(self._k(merchant, "tickets", "open", department), 0, -1)
        elif customer:
            ids = await self.r.zrevrange(self._k(merchant, "tickets", "cust", customer), 0, -1)
        else:
            ids = await self.r.zrevrange(self._k(merchant, "tickets"), 0, 4999)
        tickets = []
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            raws = await self.r.mget([self._k(merchant, "ticket", i.decode()) for i in part])
            tickets.extend(self._loaded(merchant, part, raws))
        tickets = [t for t in tickets if (not status or t["status"] == status) and
                   (assignee is None or t["assignee"] == assignee)]
        return {"items": [summary(t) for t in tickets[offset:offset + limit]], "total": len(tickets)}

    # -- changing --------------------------------------------------------------------------------
    async def create(self, merchant: str, config: TicketSettings, data: dict, by: dict) -> dict:
        _check_choice("department", data["department"], [d.id for d in config.departments])
        _check_choice("priority", data.get("priority", "normal"), PRIORITIES)
        fields = _fields(config, data.get("fields") or {})   # checked before anything is written
        now, number = self._now(), await self.r.incr(self._k(merchant, "tickets", "number"))
        ticket = {
            "ticket_id": uuid.uuid4().hex[:16], "number": f"T{number:06d}", "merchant": merchant,
            "title": data["title"], "description": data.get("description", ""), "type": data.get("type", ""),
            "priority": data.get("priority", "normal"), "status": config.first_status,
            "department": data["department"], "assignee": data.get("assignee") or "",
            "customer_id": data.get("customer_id") or "", "session_id": data.get("session_id") or "",
            "order_id": data.get("order_id") or "", "fields": fields,
            "attachments": list(data.get("attachments") or [])[:MAX_ATTACHMENTS], "created_by": by,
            "created_at": now, "updated_at": now, "version": 1, "escalated": False, "comments": [],
            "sla": {}, "history": [{"at": now, "by": by, "changes": {"status": [None, config.first_status]}}],
        }
        _start_sla(ticket, config, now)
        endpoints = await self.hooks.list(merchant)
        pipe = self.r.pipeline(transaction=True)
        self._write(pipe, ticket, None, config)
        self._effects(pipe, ticket, "ticket.created", {"status": [None, ticket["status"]]}, by, config, endpoints,
                      notify=True)
        await pipe.execute()
        return ticket

    async def update(self, merchant: str, config: TicketSettings, ticket_id: str, changes: dict, by: dict) -> dict:
        """Status (along the flow), department, assignee, priority, type, title, custom fields."""
        def apply(ticket: dict, now: int) -> dict:
            return _apply_changes(ticket, config, changes, now)
        return await self._change(merchant, config, ticket_id, apply, by, "ticket.updated")

    async def comment(self, merchant: str, config: TicketSettings, ticket_id: str, text: str, internal: bool,
                      attachments: list[str], by: dict) -> dict:
        def apply(ticket: dict, now: int) -> dict:
            if len(ticket["comments"]) >= MAX_COMMENTS:
                raise TicketError("comments", f"a ticket holds at most {MAX_COMMENTS} comments", 409)
            comment = {"comment_id": uuid.uuid4().hex[:12], "at": now, "by": by, "text": text,
                       "internal": internal, "attachments": attachments[:MAX_ATTACHMENTS]}
            ticket["comments"].append(comment)
            return {"comment": comment}
        return await self._change(merchant, config, ticket_id, apply, by, "ticket.commented")

    async def apply_deadline(self, merchant: str, config: TicketSettings, ticket_id: str, kind: str) -> dict | None:
        """An SLA deadline reached (the sweeper): a reminder, or a breach that escalates the
        ticket. Idempotent: a deadline already acted on, or moved since, changes nothing."""
        member = f"{merchant}|{ticket_id}|{kind}"
        by = {"kind": "system", "id": "sla"}

        def apply(ticket: dict, now: int) -> dict:
            sla = ticket["sla"]
            due, mark = (sla.get("remind_at"), "reminded") if kind == "remind" else (sla.get("due_at"), "breached")
            if not due or due > now or sla.get("paused_at") or sla.get(mark) or ticket["status"] in config.done:
                raise _Nothing()
            if kind == "remind":
                sla["reminded"] = now
                return {"sla_reminder": {"due_at": sla["due_at"]}}
            sla["breached"] = now
            return _escalate(ticket, config)
        try:
            return await self._change(merchant, config, ticket_id, apply, by,
                                      "ticket.sla_reminder" if kind == "remind" else "ticket.escalated")
        except (_Nothing, NotFound):
            await self.r.zrem(due_key(self.p), member)
            return None

    async def _change(self, merchant: str, config: TicketSettings, ticket_id: str, apply, by: dict,
                      event: str) -> dict:
        key = self._k(merchant, "ticket", ticket_id)
        endpoints = await self.hooks.list(merchant)
        while True:
            async with self.r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    ticket = self._load(merchant, ticket_id, await pipe.get(key))
                    before, now = dict(ticket), self._now()
                    changes = apply(ticket, now)
                    if not changes:
                        return ticket
                    ticket["version"] += 1
                    ticket["updated_at"] = now
                    ticket["history"] = (ticket["history"] + [{"at": now, "by": by, "changes": _brief(changes)}])[-200:]
                    pipe.multi()
                    self._write(pipe, ticket, before, config)
                    self._effects(pipe, ticket, event, changes, by, config, endpoints,
                                  notify=bool({"status", "department", "escalated"} & changes.keys())
                                  or (event == "ticket.commented" and not changes["comment"]["internal"]
                                      and by.get("kind") != "customer"))
                    await pipe.execute()
                    return ticket
                except WatchError:
                    continue

    def _write(self, pipe, ticket: dict, before: dict | None, config: TicketSettings) -> None:
        m, tid = ticket["merchant"], ticket["ticket_id"]
        pipe.set(self._k(m, "ticket", tid), self.ring.seal(m, orjson.dumps(ticket)))
        pipe.zadd(self._k(m, "tickets"), {tid: ticket["created_at"]})
        if ticket["customer_id"]:
            pipe.zadd(self._k(m, "tickets", "cust", ticket["customer_id"]), {tid: ticket["created_at"]})
        if before is not None and before["department"] != ticket["department"]:
            pipe.zrem(self._k(m, "tickets", "open", before["department"]), tid)
        queue = self._k(m, "tickets", "open", ticket["department"])
        if ticket["status"] in config.done:
            pipe.zrem(queue, tid)
        else:
            due = ticket["sla"].get("due_at") or ticket["created_at"]
            pipe.zadd(queue, {tid: _RANK[ticket["priority"]] * 10**13 + due})
        for kind, at in (("remind", "remind_at"), ("breach", "due_at")):
            member = f"{m}|{tid}|{kind}"
            done = ticket["sla"].get("reminded" if kind == "remind" else "breached")
            when = ticket["sla"].get(at)
            if when and not done and not ticket["sla"].get("paused_at") and ticket["status"] not in config.done:
                pipe.zadd(due_key(self.p), {member: when})
            else:
                pipe.zrem(due_key(self.p), member)

    def _effects(self, pipe, ticket: dict, event: str, changes: dict, by: dict, config: TicketSettings,
                 endpoints: list[dict], notify: bool) -> None:
        """The event for ClickHouse, the webhooks, and the customer's notice in the chat."""
        ts = ticket["updated_at"]
        payload = {"ticket_id": ticket["ticket_id"], "number": ticket["number"], "status": ticket["status"],
                   "priority": ticket["priority"], "department": ticket["department"], "type": ticket["type"],
                   "order_id": ticket["order_id"], "by": by, "changes": _brief(changes), "version": ticket["version"],
                   "done": ticket["status"] in config.done, "age_ms": ts - ticket["created_at"]}
        if event == "ticket.created":
            payload["issue_type"] = ticket["type"]
        outbox.append(pipe, self.p, self.shard, [Event(
            merchant_id=ticket["merchant"], type=event, actor_key=f"ticket:{ticket['ticket_id']}",
            seq=ticket["version"], ts=ts, session_id=ticket["session_id"], customer_id=ticket["customer_id"],
            agent_id=ticket["assignee"], group_id=ticket["department"], payload=payload)])
        hook_event = "ticket.created" if event == "ticket.created" else "ticket.updated"
        internal = event == "ticket.commented" and changes["comment"]["internal"]
        if not internal:   # colleagues' notes stay inside peakdesk
            webhooks.queue(pipe, self.p, ticket["merchant"], endpoints, hook_event,
                           {"ticket": public(ticket), "change": event.split(".", 1)[1], "changes": _brief(changes)}, ts)
        text = _notice(ticket, config, event, changes) if notify else ""
        if text and ticket["session_id"]:
            jobs.enqueue(pipe, self.p, "ticket_notice", ticket["merchant"], session_id=ticket["session_id"],
                         ticket=summary(ticket), text=text)


class _Nothing(Exception):
    """Nothing to do (a deadline already handled)."""


def _check_choice(field: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise TicketError(field, f"must be one of {list(allowed)}, got {value!r}")


def _fields(config: TicketSettings, values: dict) -> dict:
    try:
        return config.check_fields(values)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise TicketError(field, message) from None


def _start_sla(ticket: dict, config: TicketSettings, now: int) -> None:
    sla = config.sla[ticket["priority"]]
    due = now + sla.resolve_within_s * 1000
    ticket["sla"] = {"due_at": due, "remind_at": due - sla.remind_before_s * 1000 if sla.remind_before_s else None}


def _apply_changes(ticket: dict, config: TicketSettings, changes: dict, now: int) -> dict:
    done: dict = {}
    for field in ("title", "type", "assignee", "order_id"):
        if field in changes and changes[field] is not None and changes[field] != ticket[field]:
            done[field] = [ticket[field], changes[field]]
            ticket[field] = changes[field]
    if changes.get("fields") is not None:
        merged = _fields(config, {**ticket["fields"], **changes["fields"]})
        if merged != ticket["fields"]:
            done["fields"] = [ticket["fields"], merged]
            ticket["fields"] = merged
    if changes.get("department") and changes["department"] != ticket["department"]:
        _check_choice("department", changes["department"], [d.id for d in config.departments])
        done["department"] = [ticket["department"], changes["department"]]
        ticket["department"] = changes["department"]
        if "assignee" not in changes:   # the new department's people pick it up
            if ticket["assignee"]:
                done["assignee"] = [ticket["assignee"], ""]
            ticket["assignee"] = ""
    if changes.get("priority") and changes["priority"] != ticket["priority"]:
        _check_choice("priority", changes["priority"], PRIORITIES)
        done["priority"] = [ticket["priority"], changes["priority"]]
        ticket["priority"] = changes["priority"]
        if not ticket["sla"].get("breached"):
            _start_sla(ticket, config, ticket["created_at"])   # the new priority's clock, from creation
            ticket["sla"]["paused_at"] = now if ticket["status"] in config.paused else None
    if changes.get("status") and changes["status"] != ticket["status"]:
        done["status"] = [_move(ticket, config, changes["status"], now), changes["status"]]
    return done


def _move(ticket: dict, config: TicketSettings, status: str, now: int) -> str:
    """Move along the flow (the SLA clock pauses, resumes or restarts); the status it left."""
    allowed = config.flow.get(ticket["status"], [])
    if status not in allowed:
        raise TicketError("status", f"a ticket in {ticket['status']!r} may move to {allowed}, not {status!r}", 409)
    sla, was = ticket["sla"], ticket["status"]
    if status in config.paused and not sla.get("paused_at"):
        sla["paused_at"] = now
    elif status not in config.paused and sla.get("paused_at"):   # the clock runs again: deadlines move on
        held = now - sla.pop("paused_at")
        for at in ("due_at", "remind_at"):
            if sla.get(at):
                sla[at] += held
    if was in config.done and status not in config.done:   # reopened: a fresh clock
        _start_sla(ticket, config, now)
    ticket["status"] = status
    if status in config.done:
        ticket["resolved_at" if status == config.done[0] else "closed_at"] = now
    return was


def _escalate(ticket: dict, config: TicketSettings) -> dict:
    changes: dict = {"escalated": [False, True], "sla_breached": {"due_at": ticket["sla"]["due_at"]}}
    ticket["escalated"] = True
    rank = PRIORITIES.index(ticket["priority"])
    if rank < len(PRIORITIES) - 1:
        changes["priority"] = [ticket["priority"], PRIORITIES[rank + 1]]
        ticket["priority"] = PRIORITIES[rank + 1]
    if config.escalate_to and config.escalate_to != ticket["department"]:
        changes["department"] = [ticket["department"], config.escalate_to]
        ticket["department"] = config.escalate_to
        if ticket["assignee"]:
            changes["assignee"] = [ticket["assignee"], ""]
        ticket["assignee"] = ""
    return changes


def _notice(ticket: dict, config: TicketSettings, event: str, changes: dict) -> str:
    head = f"【工单 Ticket {ticket['number']}】"
    if event == "ticket.commented":
        return head + changes["comment"]["text"]
    if "escalated" in changes:
        return head + "您的工单已加急处理。Your ticket has been escalated and is now a priority."
    text = config.status(ticket["status"]).notify if "status" in changes else ""
    if not text and "department" in changes:
        name = config.department(ticket["department"]).name
        text = f"您的工单已转至{name}处理。Your ticket is now with {name}."
    return head + text if text else ""


def _brief(changes: dict) -> dict:
    return {k: v for k, v in changes.items() if not k.startswith("_")}


def summary(ticket: dict) -> dict:
    """The ticket without its comments and history (lists, the customer's notice)."""
    return {k: v for k, v in ticket.items() if k not in ("comments", "history", "merchant")}


def public(ticket: dict) -> dict:
    """What leaves peakdesk (webhooks): internal notes stay inside."""
    return {**summary(ticket), "comments": [c for c in ticket["comments"] if not c["internal"]]}
