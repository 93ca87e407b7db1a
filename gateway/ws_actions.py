"""Websocket actions beyond messages: opening a conversation (with its route), agent status,
closing, CSAT, transfer, internal notes, picking from a queue, supervisor take-over.

The gateway gathers facts (records in Redis) and checks who may ask; the actors decide. Every
action names the principal's own merchant in its actor address, so nothing reaches another
merchant's actors whatever ids a client sends.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

from actors.arrival import Facts, open_now, route
from actors.bot.config import BotConfig
from actors.envelope import ActorRef, Envelope
from storage.knowledge import KnowledgeStore
from storage.records import NotFound

from . import limits
from .connection import Connection
from .context import Services
from .permissions import Action, allowed, is_lead
from .protocol import Chat, Close, Csat, FrameError, Monitor, NoteFrame, Open, Pick, Status, Takeover, Transfer

log = logging.getLogger(__name__)

CUSTOMERS = ("customer", "visitor")


def who(conn: Connection) -> dict:
    p = conn.principal
    return {"kind": p.kind, "id": p.id, "role": p.role}


async def send(svc: Services, conn: Connection, target: ActorRef, type_: str, body: dict, ref=None) -> None:
    """One envelope to an actor; returns once it is committed there."""
    body = {**body, "from": who(conn), "connection": f"{svc.name}/{conn.id}"}
    try:
        await svc.router.send([Envelope(target, type_, body)])
    except Exception as exc:  # not retryable (the runtime retries what is): tell the client
        log.warning("gateway: %s to %s failed: %s", type_, target, exc)
        raise FrameError("unavailable", "the conversation could not be reached; try again", ref) from None


def session_ref(conn: Connection, session: str) -> ActorRef:
    return ActorRef("session", conn.principal.merchant, session)


def agent_ref(conn: Connection) -> ActorRef:
    return ActorRef("agent", conn.principal.merchant, conn.principal.id)


def _require(conn: Connection, kinds: tuple[str, ...], what: str, ref=None, action: Action | None = None) -> None:
    """The principal's kind may do this, and an agent's role allows `action` (docs/permissions.md)."""
    p = conn.principal
    if p.kind not in kinds:
        raise FrameError("forbidden", f"only {' or '.join(kinds)} may {what}", ref)
    if p.kind == "agent" and action is not None and not allowed(p.role, action):
        raise FrameError("forbidden", f"role {p.role} may not {action.value}", ref)


def check_agent_action(conn: Connection, action: Action, ref=None) -> None:
    """For frames customers may send too (msg, subscribe, close): agents also need the role."""
    p = conn.principal
    if p.kind == "agent" and not allowed(p.role, action):
        raise FrameError("forbidden", f"role {p.role} may not {action.value}", ref)


# -- arrival -----------------------------------------------------------------------------------
async def open_conversation(svc: Services, conn: Connection, frame: Open) -> None:
    _require(conn, CUSTOMERS, "open conversations", frame.id)
    try:
        await limits.take_widget_session(svc, "open", conn.ip)
    except limits.TooMany as exc:
        raise FrameError(exc.code, exc.message, frame.id, retry_after_s=exc.retry_after_s) from None
    body = await arrival(svc, conn.principal.merchant, conn.principal.id, frame)
    session = uuid.uuid4().hex[:24]
    await send(svc, conn, session_ref(conn, session), "open", body, ref=frame.id)
    conn.last_seq.setdefault(session, 0)
    conn.offer({"t": "opened", "id": frame.id, "session": session, "group": body["group"]})


async def arrival(svc: Services, merchant: str, customer_id: str, frame: Open) -> dict:
    """The open envelope's body: the route from the merchant's diversion rules, the group's
    routing settings, business hours."""
    records = svc.records
    m = await records.get_merchant(merchant)
    settings = m.get("settings") or {}
    try:
        customer = await records.get_customer(merchant, customer_id)
    except NotFound:
        customer = {}
    facts = Facts(channel=frame.channel, issue_type=frame.issue_type or "", visit_count=customer.get("visit_count", 0),
                  order_status=(frame.entry or {}).get("order_status", ""), entry=frame.entry or {},
                  attributes=customer.get("attributes") or {})
    chosen = route(settings.get("diversion") or [], facts, frame.group or "default")
    try:
        routing = (await records.get_group(merchant, chosen.group)).get("routing") or {}
    except NotFound:
        routing = None  # the queue keeps the settings it has (default: least load)
    hours = settings.get("business_hours")
    outside = not open_now(hours, dt.datetime.now(dt.timezone.utc))
    kb_entries = await KnowledgeStore(records.r, records.p).count(merchant) if svc.ask_bot is not None else 0
    bot = bot_welcome(settings.get("bot") or {}) if kb_entries else None
    return {"bot": bot is not None, "welcome": bot or "", "assist": kb_entries > 0,"customer_id": customer_id, "channel": frame.channel, "group": chosen.group,
            "priority": chosen.priority, "skills": list(chosen.skills), "rule": chosen.rule, "routing": routing,
            "issue_type": frame.issue_type, "entry": frame.entry or {}, "id": frame.id,
            "idle_close_s": int(settings.get("idle_close_minutes", 30)) * 60,
            "outside_hours": outside, "outside_message": settings.get("offline_message") or OFFLINE_MESSAGE}


def bot_welcome(bot_settings: dict) -> str | None:
    """The bot's welcome if the merchant's bot takes new conversations (the caller knows the
    knowledge base has entries), else None."""
    if bot_settings.get("enabled") is False:
        return None
    config = BotConfig.model_validate(bot_settings, strict=False)   # stored, checked strictly when saved
    zh, en = config.say("welcome", "zh"), config.say("welcome", "en")
    return zh if zh == en else f"{zh}\n{en}"


OFFLINE_MESSAGE = "现在是非工作时间，请留言，我们上班后会尽快回复。 We are closed now: leave a message and we will reply when we are back."


# -- agents ------------------------------------------------------------------------------------
async def agent_joined(svc: Services, conn: Connection) -> None:
    """An agent's console connected: it hears about its status and new conversations."""
    if conn.principal.kind == "agent":
        await send(svc, conn, agent_ref(conn), "subscribe", {})


async def agent_left(svc: Services, conn: Connection) -> None:
    if conn.principal.kind == "agent":
        await send(svc, conn, agent_ref(conn), "unsubscribe", {})


async def set_status(svc: Services, conn: Connection, frame: Status) -> None:
    _require(conn, ("agent",), "set an agent status", action=Action.SELF_SET_STATUS)
    record = await svc.records.get_agent(conn.principal.merchant, conn.principal.id)
    await send(svc, conn, agent_ref(conn), "status", {
        "status": frame.status, "capacity": int(record.get("max_concurrent", 5)),
        "groups": list(record.get("groups", [])), "skills": list(record.get("skills", []))})


async def pick(svc: Services, conn: Connection, frame: Pick) -> None:
    """Manual assignment: an agent of the group (or a supervisor) takes a waiting conversation."""
    _require(conn, ("agent",), "pick conversations", frame.session, Action.CONVERSATION_ACCEPT)
    record = await svc.records.get_agent(conn.principal.merchant, conn.principal.id)
    if frame.group not in record.get("groups", []) and not is_lead(conn.principal.role):
        raise FrameError("forbidden", f"you are not in group {frame.group}", frame.session)
    await send(svc, conn, ActorRef("queue", conn.principal.merchant, frame.group), "pick",
               {"session": frame.session, "agent_id": conn.principal.id}, ref=frame.session)


# -- a conversation ----------------------------------------------------------------------------
async def close(svc: Services, conn: Connection, frame: Close) -> None:
    check_agent_action(conn, Action.CONVERSATION_CLOSE, frame.session)
    await send(svc, conn, session_ref(conn, frame.session), "close", {}, ref=frame.session)


async def csat(svc: Services, conn: Connection, frame: Csat) -> None:
    _require(conn, CUSTOMERS, "rate a conversation", frame.session)
    await send(svc, conn, session_ref(conn, frame.session), "csat",
               {"score": frame.score, "comment": frame.comment}, ref=frame.session)


async def transfer(svc: Services, conn: Connection, frame: Transfer) -> None:
    _require(conn, ("agent",), "transfer conversations", frame.session, Action.CONVERSATION_TRANSFER)
    if frame.to_group is not None:
        try:
            await svc.records.get_group(conn.principal.merchant, frame.to_group)
        except NotFound:
            raise FrameError("invalid_frame", f"to_group: no group {frame.to_group}", frame.session) from None
    await send(svc, conn, session_ref(conn, frame.session), "transfer",
               {"to_agent": frame.to_agent, "to_group": frame.to_group, "note": frame.note}, ref=frame.session)


async def note(svc: Services, conn: Connection, frame: NoteFrame) -> None:
    _require(conn, ("agent",), "write internal notes", frame.cid, Action.CONVERSATION_NOTE)
    await send(svc, conn, session_ref(conn, frame.session), "note", {"cid": frame.cid, "text": frame.text},
               ref=frame.cid)


async def takeover(svc: Services, conn: Connection, frame: Takeover) -> None:
    _require(conn, ("agent",), "take conversations over", frame.session, Action.CONVERSATION_TAKE_OVER)
    await send(svc, conn, session_ref(conn, frame.session), "takeover", {}, ref=frame.session)


# -- agents among themselves ------------------------------------------------------------------
async def chat(svc: Services, conn: Connection, frame: Chat) -> None:
    """Agent-to-agent chat: private (`to_agent`) or the whole group's (`group`)."""
    _require(conn, ("agent",), "chat with colleagues", frame.cid, Action.TEAM_CHAT)
    room, members = await chat_room(svc, conn.principal, frame.to_agent, frame.group, frame.cid)
    await send(svc, conn, ActorRef("room", conn.principal.merchant, room), "message",
               {"cid": frame.cid, "text": frame.text, "members": members}, ref=frame.cid)


async def chat_room(svc: Services, p, to_agent: str | None, group: str | None, ref=None) -> tuple[str, list[str]]:
    """The room id and its members; FrameError if the agent may not be in it."""
    records = svc.records
    if to_agent is not None:
        try:
            await records.get_agent(p.merchant, to_agent)
        except NotFound:
            raise FrameError("invalid_frame", f"to_agent: no agent {to_agent}", ref) from None
        pair = sorted({p.id, to_agent})
        return "dm." + ".".join(pair), pair
    me = await records.get_agent(p.merchant, p.id)
    if group not in me.get("groups", []) and not is_lead(p.role):
        raise FrameError("forbidden", f"you are not in group {group}", ref)
    members = {a["agent_id"] for a in await records.list_agents(p.merchant) if group in a.get("groups", [])}
    return f"grp.{group}", sorted(members | {p.id})


async def monitor(svc: Services, conn: Connection, frame: Monitor) -> None:
    """The live picture every 2 s and alerts (gateway/monitor.py): supervisors and up."""
    p = conn.principal
    if p.kind != "agent" or not allowed(p.role, Action.CONVERSATION_VIEW_ALL):
        raise FrameError("forbidden", "only supervisors, admins and owners watch the live picture", None)
    conn.monitoring = frame.on
    conn.offer({"t": "monitoring", "on": frame.on, "every_s": 2})


ACTIONS = {Monitor: monitor, Status: set_status, Close: close, Csat: csat, Transfer: transfer, NoteFrame: note, Pick: pick,
           Takeover: takeover, Chat: chat}
