"""Customers and agents who live through faults, as the web widget and the console do
(web/common.js, web/widget.js): a dropped connection comes back with back-off, says `hello`
with `resume` (the last seq seen of every conversation followed), and re-sends every message
not yet acknowledged under the same cid. What each side saw goes into the bench's Ledger
(bench/people.py), so bench/verify.py judges the run exactly as it judges `peakdesk bench`.

A message counts as acknowledged by its `ack`, or by the `msg` frame carrying its own cid (a
replay after a resume numbers it just as well). A person waits `patience` (the phase's length)
for anything before giving up; what is unacknowledged then is counted (`unacked`), what it waited
for is listed (`stuck`), nothing is hidden. Nothing here reads the server's state behind the
protocol: what a person knows, it learned from frames.
"""
from __future__ import annotations

import random
import time
import uuid

import trio

from bench.metrics import Metrics
from bench.people import Ledger, _record, text_of
from bench.profiles import Plan
from gateway.client import connect

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 2.0
CONNECT_TIMEOUT_S = 5.0


class Tracker:
    """When each message was sent (the person pressed send) and first delivered, on
    time.monotonic (the clock the fault injector stamps its kill with); people's counters."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.delivered: dict[str, float] = {}
        self.counts: dict[str, int] = {"connects": 0, "reconnects": 0, "resent": 0, "open_retries": 0,
                                       "unacked": 0, "gave_up": 0}
        self.stuck: list[dict] = []   # what people gave up waiting for (session, what, since when)
        self.refusals: list[dict] = []  # error frames: who got which, about what, when

    def send(self, cid: str) -> None:
        self.sent.setdefault(cid, time.monotonic())

    def deliver(self, cid: str | None) -> None:
        if cid and cid not in self.delivered:
            self.delivered[cid] = time.monotonic()

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class Peer:
    """One person's connection, kept up (reconnecting) until `run` is cancelled. Frames go to
    `on_frame` (after the ledger has recorded `msg` frames); flows wait with `until`."""

    def __init__(self, url: str, token: str, side: str, ledger: Ledger, metrics: Metrics, track: Tracker):
        self.url, self.token, self.side = url, token, side
        self.ledger, self.metrics, self.track = ledger, metrics, track
        self.client = None
        self.last_seq: dict[str, int] = {}
        self.follow: set[str] = set()            # conversations resumed after a reconnect
        self.pending: dict[str, dict] = {}       # cid -> the msg frame, until acknowledged
        self.refused: dict[str, float] = {}      # an open's id -> seconds to wait before opening again
        self.acks: dict[str, int] = {}           # cid -> seq
        self.on_frame = lambda frame: None
        self.on_connect = None                   # async () -> None, after each welcome
        self.repeats = 0
        self.connects = 0
        self.retries: dict[str, int] = {}        # subscribes tried again, per conversation
        self._changed = trio.Event()

    # -- waiting ---------------------------------------------------------------------------------
    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate, timeout: float) -> bool:
        """True once `predicate()` holds (checked after every frame and connection change)."""
        with trio.move_on_after(timeout):
            while not predicate():
                await self._changed.wait()
            return True
        return False

    @property
    def up(self) -> bool:
        return self.client is not None

    # -- sending -----------------------------------------------------------------------------------
    async def send(self, frame: dict) -> bool:
        """Send if connected; False if not (the flow re-sends after the next welcome)."""
        client = self.client
        if client is None:
            return False
        try:
            await client.send(frame)
            return True
        except Exception:  # the connection is going: the reader notices and reconnects
            return False

    async def send_message(self, session: str, cid: str, text: str) -> None:
        """Send now if connected; kept in `pending` (re-sent after every reconnect, same cid)
        until its ack lands in `acks`."""
        frame = {"t": "msg", "cid": cid, "session": session, "kind": "text", "content": {"text": text}}
        self.pending[cid] = frame
        self.track.send(cid)
        await self.send(frame)

    # -- the connection ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, read, reconnect — until cancelled."""
        async with trio.open_nursery() as self._tasks:
            self._tasks.start_soon(self._connection_loop)

    async def _connection_loop(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            try:
                resume = {s: self.last_seq.get(s, 0) for s in self.follow}
                async with connect(self.url, self.token, resume=resume or None, timeout=CONNECT_TIMEOUT_S) as c:
                    self.client = c
                    self.connects += 1
                    self.track.count("connects")
                    if self.connects > 1:
                        self.track.count("reconnects")
                    delay = BACKOFF_FIRST_S
                    if self.on_connect is not None:
                        await self.on_connect()
                    for frame in list(self.pending.values()):   # what was not acknowledged: again
                        self.track.count("resent")
                        await self.send(frame)
                    self.changed()
                    while True:
                        try:
                            frame = await c.receive(timeout=None)
                        except (trio.EndOfChannel, trio.ClosedResourceError):
                            break
                        self._frame(frame)
            except Exception as exc:  # refused, reset, timed out, closed mid-handshake: try again
                self.metrics.error(f"{self.side} connection: {_kind(exc)}")
            finally:
                if self.client is not None:
                    self.repeats += self.client.repeats
                    self.client = None
                    self.changed()
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _frame(self, frame: dict) -> None:
        t = frame.get("t")
        if t == "msg":
            session, seq = frame["session"], frame["seq"]
            self.last_seq[session] = max(self.last_seq.get(session, 0), seq)
            if frame.get("cid") in self.pending:   # our own message, numbered (a replay): durable
                self.pending.pop(frame["cid"])
                self.acks[frame["cid"]] = seq
            if self.side == "customer" or (frame.get("from") or {}).get("kind") in ("customer", "visitor"):
                _record(frame, self.ledger, self.metrics, self.side)
                self.track.deliver(frame.get("cid"))
        elif t == "ack" and frame.get("cid") in self.pending:
            self.pending.pop(frame["cid"])
            self.acks[frame["cid"]] = frame["seq"]
        elif t == "error":
            self.metrics.error(frame.get("code", "error"))
            ref, code = frame.get("ref"), frame.get("code")
            if len(self.track.refusals) < 50:
                self.track.refusals.append({"side": self.side, "code": code, "ref": ref,
                                            "session": frame.get("session"), "at": time.monotonic()})
            if code in ("unavailable", "not_ready", "rate_limited"):   # refused for now: again shortly
                if ref in self.pending:
                    self.track.count("resent")
                    self._tasks.start_soon(self._send_later, self.pending[ref])
                elif ref in self.follow:
                    self._tasks.start_soon(self._send_later, {"t": "subscribe", "session": ref,
                                                              "after": self.last_seq.get(ref, 0)})
                elif ref:        # an open: _open tries again, as the widget does
                    self.refused[ref] = 0.5
            elif code == "too_many_sessions" and ref:
                self.refused[ref] = float(frame.get("retry_after_s") or 1)
            elif code == "unknown_session" and ref in self.follow and self.retries.get(ref, 0) < 10:
                # an agent's `agent` frame names a conversation it accepted before the conversation
                # took it (AgentActor.on_confirmed): a subscribe that raced ahead is tried again
                self.retries[ref] = self.retries.get(ref, 0) + 1
                self._tasks.start_soon(self._send_later, {"t": "subscribe", "session": ref,
                                                          "after": self.last_seq.get(ref, 0)})
            elif code == "session_closed" and ref in self.pending:
                self.pending.pop(ref)         # refused for good: the conversation closed first
                self.track.count("refused_closed")
        self.on_frame(frame)
        self.changed()

    async def _send_later(self, frame: dict) -> None:
        await trio.sleep(0.5)
        if frame.get("t") != "msg" or frame.get("cid") in self.pending:
            await self.send(frame)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "+".join(sorted({_kind(e) for e in exc.exceptions}))
    return type(exc).__name__


# -- a customer ------------------------------------------------------------------------------------
async def customer(url: str, token: str, plan: Plan, group: str, ledger: Ledger, metrics: Metrics, track: Tracker,
                   rng: random.Random, stop: trio.Event, patience: float) -> None:
    """Open a conversation, wait to be assigned, send `plan.messages` messages each answered by
    the agent, wait for the agent to close it, rate it (mostly). Survives any number of
    reconnects; `stop` ends it early (the customer closes)."""
    peer = Peer(url, token, "customer", ledger, metrics, track)
    st = {"session": None, "opened": {}, "status": "", "rated": False, "invited": False, "early": []}

    def on_frame(f: dict) -> None:
        t, session = f.get("t"), f.get("session")
        if t == "opened":
            st["opened"][f["id"]] = f["session"]
            return
        if session is None:
            return
        if st["session"] is None:
            # the open's round may also have seated it: its pushes (session.assigned) ride back
            # with the open's acknowledgement, ahead of the gateway's own `opened`
            st["early"].append(f)
            return
        if session != st["session"]:
            return
        conv = ledger[session]
        if t == "event":
            event = f.get("event")
            if event == "session.assigned":
                conv.assigned = True
            elif event == "session.closed":
                conv.closed = True
            elif event == "csat.invite":
                conv.invited = True
            elif event == "csat.rated":
                conv.rated = True
        elif t == "subscribed":        # a resume tells the conversation's state
            st["status"] = f.get("status", "")
            if f.get("agent_id"):
                conv.assigned = True
            if st["status"] == "closed":
                conv.closed = True
                conv.invited = True    # a queued or assigned conversation's close always invites
        elif t == "error" and f.get("code") == "invalid_state" and st["rated"]:
            conv.rated = True          # a re-sent rating: the first one counted
    peer.on_frame = on_frame

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            try:
                await _converse(peer, st, plan, group, ledger, metrics, track, rng, stop, patience)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        track.count("unacked", len(peer.pending))
        ledger.repeats += peer.repeats
        if st["session"] and st["session"] in ledger.conversations and ledger[st["session"]].closed:
            ledger[st["session"]].invited = True


async def _open(peer: Peer, st: dict, group: str, track: Tracker, patience: float) -> str | None:
    """`open` until one is answered (again after a reconnect; counted: open_retries — an open
    whose answer was lost with its connection may have made a conversation nobody follows)."""
    deadline = trio.current_time() + patience
    tries = 0
    while trio.current_time() < deadline:
        if not await peer.until(lambda: peer.up, deadline - trio.current_time()):
            return None
        rid = uuid.uuid4().hex[:12]
        tries += 1
        if tries > 1:
            track.count("open_retries")
        await peer.send({"t": "open", "id": rid, "group": group, "channel": "web"})
        gone = peer.client
        await peer.until(lambda: rid in st["opened"] or peer.client is not gone or rid in peer.refused,
                         max(0.0, deadline - trio.current_time()))
        if rid in st["opened"]:
            return st["opened"][rid]
        if rid in peer.refused:     # unavailable (Redis away for a moment) or a limit: again after a while
            await trio.sleep(min(peer.refused.pop(rid), max(0.0, deadline - trio.current_time())))
    return None


async def _converse(peer: Peer, st: dict, plan: Plan, group: str, ledger: Ledger, metrics: Metrics, track: Tracker,
                    rng: random.Random, stop: trio.Event, patience: float) -> None:
    t0 = metrics.now()
    session = await _open(peer, st, group, track, patience)
    if session is None:
        track.count("gave_up")
        track.count("gave_up_waiting_for_opened")
        return
    st["session"] = session
    peer.follow.add(session)
    peer.last_seq.setdefault(session, 0)
    conv = ledger.open(session)
    metrics.conversations_opened += 1
    for f in st.pop("early"):
        peer.on_frame(f)

    async def give_up(waiting_for: str) -> None:
        """Waited `patience` for something that never came: counted, then leave as a customer
        closing the window would (what is unacknowledged is counted and not sent again)."""
        track.count("gave_up")
        track.count(f"gave_up_waiting_for_{waiting_for}")
        track.stuck.append({"session": session, "waiting_for": waiting_for, "at": time.monotonic(),
                            "pending": sorted(peer.pending), "last_seq": peer.last_seq.get(session, 0)})
        track.count("unacked", len(peer.pending))
        peer.pending.clear()
        await _close(peer, session, conv, tries=3)

    if not await peer.until(lambda: conv.assigned or stop.is_set(), patience):
        return await give_up("assignment")
    if conv.assigned:
        metrics.assigned(metrics.now() - t0)
    for i in range(plan.messages):
        if stop.is_set() or conv.closed:
            break
        cid = f"{session}.c{i}.{plan.messages}"
        ledger.sent_at[cid] = metrics.now()
        metrics.message_sent()
        await peer.send_message(session, cid, text_of(i, plan.message_bytes))
        if not await peer.until(lambda: cid in peer.acks, patience):
            return await give_up("ack")
        metrics.acked(metrics.now() - ledger.sent_at[cid])
        conv.customer_acked.add(peer.acks[cid])
        # the agent's answer (from a live push, or the replay of a resume)
        if not await peer.until(lambda: f"a-{cid}" in track.delivered or stop.is_set() or conv.closed, patience):
            return await give_up("answer")
        if plan.customer_think_s > 0:
            await trio.sleep(rng.expovariate(1 / plan.customer_think_s))
    if not conv.closed and stop.is_set():
        await _close(peer, session, conv)   # the run is ending: leave, closing it
    if not await peer.until(lambda: conv.closed, 30):
        await _close(peer, session, conv)   # the agent's close may have died with a process
        if not conv.closed:
            track.count("gave_up")
            track.count("gave_up_waiting_for_close")
            return
    metrics.conversations_closed += 1
    conv.invited = True   # closed from queued or assigned: invited (the frame may have gone with a connection)
    if rng.random() < plan.csat_rate:
        await _rate(peer, session, conv, rng, st)


async def _close(peer: Peer, session: str, conv, tries: int = 10) -> None:
    """Close (idempotent on the server), again after each reconnect, until it is known closed."""
    for _ in range(tries):
        await peer.until(lambda: peer.up, 10)
        await peer.send({"t": "close", "session": session})
        gone = peer.client
        if await peer.until(lambda: conv.closed or peer.client is not gone, 5) and conv.closed:
            return
        # not confirmed: ask the conversation itself (a subscribe answers with its state)
        await peer.send({"t": "subscribe", "session": session, "after": peer.last_seq.get(session, 0)})
        if await peer.until(lambda: conv.closed, 3):
            return


async def _rate(peer: Peer, session: str, conv, rng: random.Random, st: dict) -> None:
    """Rate once; re-sent after a reconnect until `csat.rated` (or `invalid_state`: already rated)."""
    score = rng.choice((5, 5, 5, 4, 4, 3, 1))
    for _ in range(10):
        await peer.until(lambda: peer.up, 10)
        await peer.send({"t": "csat", "session": session, "score": score, "comment": "物流很快 fast"})
        st["rated"] = True
        gone = peer.client
        if await peer.until(lambda: conv.rated or peer.client is not gone, 5) and conv.rated:
            peer.metrics.rated += 1
            return


# -- an agent --------------------------------------------------------------------------------------
async def agent(url: str, token: str, plan: Plan, ledger: Ledger, metrics: Metrics, track: Tracker,
                rng: random.Random, done: trio.Event) -> None:
    """A console: online, follows what it is given, answers every customer message after a
    think time, closes a conversation after answering its last message; runs until `done`."""
    peer = Peer(url, token, "agent", ledger, metrics, track)
    answered: set[str] = set()
    closing: set[str] = set()

    try:
        await _console(peer, plan, ledger, metrics, rng, done, answered, closing)
    finally:
        track.count("unacked", len(peer.pending))
        ledger.repeats += peer.repeats


async def _console(peer: Peer, plan: Plan, ledger: Ledger, metrics: Metrics, rng: random.Random, done: trio.Event,
                   answered: set[str], closing: set[str]) -> None:
    async with trio.open_nursery() as nursery:
        async def on_connect() -> None:
            await peer.send({"t": "status", "status": "online"})
            for session in closing:
                await peer.send({"t": "close", "session": session})

        def follow(session: str) -> None:
            ledger[session].assigned = True
            if session not in peer.follow:
                peer.follow.add(session)
                nursery.start_soon(peer.send, {"t": "subscribe", "session": session,
                                               "after": peer.last_seq.get(session, 0)})

        def on_frame(f: dict) -> None:
            t = f.get("t")
            if t == "assigned":
                follow(f["session"])
            elif t == "agent":       # on every (re)connect: what it holds, assigned while away too
                for session in f.get("sessions", []):
                    follow(session)
            elif t == "released":
                peer.follow.discard(f["session"])
                closing.discard(f["session"])
                if f.get("reason") == "closed":
                    ledger[f["session"]].closed = True
            elif t == "msg" and (f.get("from") or {}).get("kind") in ("customer", "visitor"):
                cid = f.get("cid", "")
                if cid not in answered:
                    answered.add(cid)
                    nursery.start_soon(_answer, peer, f, plan, ledger, metrics, rng, closing)

        peer.on_frame, peer.on_connect = on_frame, on_connect
        nursery.start_soon(peer.run)
        try:
            await done.wait()
        finally:
            nursery.cancel_scope.cancel()


async def _answer(peer: Peer, frame: dict, plan: Plan, ledger: Ledger, metrics: Metrics, rng: random.Random,
                  closing: set[str]) -> None:
    session, cid = frame["session"], frame.get("cid", "")
    if plan.agent_think_s > 0:
        await trio.sleep(rng.expovariate(1 / plan.agent_think_s))
    reply = f"a-{cid}"
    ledger.sent_at[reply] = metrics.now()
    metrics.message_sent()
    await peer.send_message(session, reply, "马上为您查询 checking now")
    if not await peer.until(lambda: reply in peer.acks or ledger[session].closed, 300):
        peer.track.count("gave_up")
        peer.track.count("gave_up_waiting_for_agent_ack")
        return
    if reply not in peer.acks:
        # closed by its customer meanwhile: refused (session_closed), or never acknowledged
        if peer.pending.pop(reply, None) is not None:
            peer.track.count("unacked")
            peer.track.stuck.append({"session": session, "waiting_for": "agent_ack", "at": time.monotonic(),
                                     "pending": [reply], "last_seq": peer.last_seq.get(session, 0)})
        return
    metrics.acked(metrics.now() - ledger.sent_at[reply])
    ledger[session].agent_acked.add(peer.acks[reply])
    n, _, of = cid.rpartition(".c")[2].partition(".")
    if n.isdigit() and of.isdigit() and int(n) + 1 >= int(of):
        closing.add(session)
        await peer.send({"t": "close", "session": session})
