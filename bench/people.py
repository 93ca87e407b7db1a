"""Simulated customers and agents for `peakdesk bench`, speaking the real protocol through the
project's Python client (gateway/client.py), and the ledger that proves exactly-once delivery.

A customer connects, opens a conversation, waits to be assigned, then sends `messages`
messages, each answered by the agent after a think time, pausing between them; the agent
closes after the last answer; the customer rates (most of the time) and leaves. Every message's
cid names its conversation, its number and the conversation's length, so the agent knows when
to close without any side channel.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import trio

from gateway.client import Client, ClientError, connect

from .metrics import Metrics
from .profiles import Plan

TEXT = "您好，请问我的订单什么时候发货？Hello, when does my order ship? "


@dataclass
class Conversation:
    session: str
    customer_acked: set[int] = field(default_factory=set)
    agent_acked: set[int] = field(default_factory=set)
    to_customer: Counter = field(default_factory=Counter)   # seq -> times the customer received it
    to_agent: Counter = field(default_factory=Counter)      # seq -> times an agent received it
    assigned: bool = False
    closed: bool = False
    invited: bool = False
    rated: bool = False


class Ledger:
    """Everything each side saw: what `verify` checks, and what the events must add up to."""

    def __init__(self) -> None:
        self.conversations: dict[str, Conversation] = {}
        self.sent_at: dict[str, float] = {}    # cid -> when it was sent
        self.repeats = 0                        # msg frames a client received twice

    def open(self, session: str) -> Conversation:
        return self.conversations.setdefault(session, Conversation(session))

    def __getitem__(self, session: str) -> Conversation:
        return self.open(session)


def text_of(n: int, size: int) -> str:
    body = (TEXT * (size // len(TEXT) + 1))[:max(1, size)]
    return f"#{n} {body}"


async def _frames(client: Client, ledger: Ledger, metrics: Metrics, side: str, until, timeout: float) -> dict:
    """Read frames, recording every `msg` in the ledger, until `until(frame)`; returns it."""
    with trio.fail_after(timeout):
        while True:
            frame = await client.receive(timeout=None)
            t = frame.get("t")
            if t == "msg":
                _record(frame, ledger, metrics, side)
            elif t == "error":
                metrics.error(frame.get("code", "error"))
            if until(frame):
                return frame


def _record(frame: dict, ledger: Ledger, metrics: Metrics, side: str) -> None:
    conv = ledger[frame["session"]]
    (conv.to_customer if side == "customer" else conv.to_agent)[frame["seq"]] += 1
    sent = ledger.sent_at.get(frame.get("cid", ""))
    if sent is not None:
        metrics.message_delivered(metrics.now() - sent, to_agent=(side == "agent"))


async def customer(url: str, token: str, plan: Plan, group: str, ledger: Ledger, metrics: Metrics,
                   rng: random.Random, stop: trio.Event, patience: float) -> None:
    """One customer's whole conversation; ends early (closing it) once `stop` is set."""
    async with connect(url, token) as c:
        metrics.connected(+1)
        try:
            await _converse(c, plan, group, ledger, metrics, rng, stop, patience)
        finally:
            metrics.connected(-1)
            ledger.repeats += c.repeats


async def _converse(c: Client, plan: Plan, group: str, ledger: Ledger, metrics: Metrics,
                    rng: random.Random, stop: trio.Event, patience: float) -> None:
    t0 = metrics.now()
    session = await c.open(group=group)
    conv = ledger.open(session)
    metrics.conversations_opened += 1
    await _frames(c, ledger, metrics, "customer",
                  lambda f: f.get("t") == "event" and f.get("event") == "session.assigned", patience)
    conv.assigned = True
    metrics.assigned(metrics.now() - t0)
    for i in range(plan.messages):
        if stop.is_set():
            break
        cid = f"{session}.c{i}.{plan.messages}"
        ledger.sent_at[cid] = metrics.now()
        metrics.message_sent()
        seq = await c.send_message(session, "text", {"text": text_of(i, plan.message_bytes)}, cid=cid, timeout=60)
        metrics.acked(metrics.now() - ledger.sent_at[cid])
        conv.customer_acked.add(seq)
        await _frames(c, ledger, metrics, "customer",
                      lambda f: f.get("t") == "msg" and f.get("cid") == f"a-{cid}", patience)
        await trio.sleep(rng.expovariate(1 / plan.customer_think_s) if plan.customer_think_s > 0 else 0)
    if stop.is_set() and not conv.closed:
        await c.close(session)  # the run is ending: leave like a customer who closes the window
    await _frames(c, ledger, metrics, "customer", lambda f: f.get("event") == "session.closed", 30)
    conv.closed = True
    metrics.conversations_closed += 1
    await _frames(c, ledger, metrics, "customer", lambda f: f.get("event") == "csat.invite", 30)
    conv.invited = True
    if rng.random() < plan.csat_rate:
        await c.rate(session, rng.choice((5, 5, 5, 4, 4, 3, 1)), "物流很快 fast")
        await _frames(c, ledger, metrics, "customer", lambda f: f.get("event") == "csat.rated", 30)
        conv.rated = True
        metrics.rated += 1


async def agent(url: str, token: str, plan: Plan, ledger: Ledger, metrics: Metrics, rng: random.Random,
                done: trio.Event) -> None:
    """One agent console: online, takes what it is given, answers every customer message after
    a think time, closes after the last one; runs until `done`."""
    async with connect(url, token) as a, trio.open_nursery() as nursery:
        metrics.connected(+1)
        await a.set_status("online")
        nursery.start_soon(_wait_then_cancel, done, nursery.cancel_scope)
        try:
            while True:
                frame = await a.receive(timeout=None)
                t = frame.get("t")
                if t == "assigned":
                    ledger[frame["session"]].assigned = True
                    nursery.start_soon(_subscribe, a, frame["session"], metrics)
                elif t == "msg" and (frame.get("from") or {}).get("kind") in ("customer", "visitor"):
                    _record(frame, ledger, metrics, "agent")
                    nursery.start_soon(_answer, a, frame, plan, ledger, metrics, rng)
                elif t == "error":
                    metrics.error(frame.get("code", "error"))
        finally:
            ledger.repeats += a.repeats
            metrics.connected(-1)


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _subscribe(a: Client, session: str, metrics: Metrics) -> None:
    try:
        await a.subscribe(session, after=0, timeout=60)
    except (ClientError, trio.TooSlowError) as exc:
        metrics.error(f"subscribe: {type(exc).__name__}")


async def _answer(a: Client, frame: dict, plan: Plan, ledger: Ledger, metrics: Metrics, rng: random.Random) -> None:
    session, cid = frame["session"], frame.get("cid", "")
    await trio.sleep(rng.expovariate(1 / plan.agent_think_s) if plan.agent_think_s > 0 else 0)
    reply = f"a-{cid}"
    ledger.sent_at[reply] = metrics.now()
    metrics.message_sent()
    try:
        seq = await a.send_message(session, "text", {"text": "马上为您查询 checking now"}, cid=reply, timeout=60)
    except (ClientError, trio.TooSlowError) as exc:  # closed meanwhile (the run ending), or too slow
        metrics.error(f"answer: {getattr(exc, 'code', type(exc).__name__)}")
        return
    metrics.acked(metrics.now() - ledger.sent_at[reply])
    ledger[session].agent_acked.add(seq)
    n, _, of = cid.rpartition(".c")[2].partition(".")
    if n.isdigit() and of.isdigit() and int(n) + 1 >= int(of):
        await a.close(session)
