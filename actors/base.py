"""The actor base: a key, its own state, one mailbox, one message at a time, timers.

Handlers are plain synchronous methods `on_<type>` (dots in the type become underscores). The
host drains mailboxes inside its batch loop, one message per actor at a time; a handler never
awaits, so a turn can't interleave with another (measured: 5x cheaper than a task per actor).

What a handler produces — events, messages to other actors, timers — is buffered in its turn
and becomes visible only after the host's commit made it durable (events in the outbox,
state in a snapshot): a failed turn leaves nothing behind but its partial state change.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from storage.events import Event

from .envelope import ActorRef, Envelope

# An actor remembers the last envelope number of this many origins (gateways, hosts, drivers);
# older origins are forgotten first. Origins are process incarnations, a few per node a day.
MAX_ORIGINS = 256


class UnknownMessage(Exception):
    """An envelope type this actor kind has no handler for."""


class Rejected(Exception):
    """A handler refusing a message without changing anything (an unknown session, a caller
    without access). The host persists nothing for the turn and sends `push` (connection,
    frame) so the client learns why."""

    def __init__(self, message: str, push: tuple[str, dict] | None = None):
        super().__init__(message)
        self.push = push


class Turn:
    """What one handler produced; committed together or not at all."""

    __slots__ = ("events", "sends", "pushes", "logs", "asks", "jobs")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sends: list[Envelope] = []
        self.pushes: list[tuple[str, dict]] = []   # (connection "gateway/conn", frame)
        self.logs: list[tuple[int, dict]] = []     # (seq, record) for this actor's log
        self.asks: list[tuple[str, dict]] = []     # (service, request) for a worker pool
        self.jobs: list[tuple[str, dict]] = []     # (kind, fields): durable side effects (storage/jobs.py)

    def clear(self) -> None:
        self.events.clear()
        self.sends.clear()
        self.pushes.clear()
        self.logs.clear()
        self.asks.clear()
        self.jobs.clear()


class Actor:
    """Subclasses set `kind` and define `on_<type>(self, body, env)` handlers.

    `self.state` is the actor's own msgpack-able dict, saved in a snapshot after every turn
    that changed it and restored on activation. Bookkeeping the runtime needs (per-origin
    watermarks, timers, the event sequence) lives in `self.meta`, saved alongside.
    """

    kind: ClassVar[str] = ""

    def __init__(self, ref: ActorRef, snapshot: tuple[dict, dict] | None, clock: Callable[[], float]):
        self.ref = ref
        state, meta = snapshot if snapshot else (self.initial_state(), {})
        self.state: dict[str, Any] = state
        self.meta: dict[str, Any] = {"w": meta.get("w", {}), "t": meta.get("t", {}), "q": meta.get("q", 0)}
        self.clock = clock
        self.last_active = clock()
        self.turn = Turn()

    def initial_state(self) -> dict[str, Any]:
        return {}

    # -- runtime side ------------------------------------------------------------------------
    def accepts(self, env: Envelope) -> bool:
        """False for an envelope already handled (a re-sent batch after a crash): its number is
        not above the watermark of its origin. Timers and local wake-ups have no origin."""
        if not env.origin:
            return True
        marks = self.meta["w"]
        seen = marks.get(env.origin)
        if seen is not None and env.n <= seen[0]:
            return False
        marks[env.origin] = [env.n, int(self.clock())]
        if len(marks) > MAX_ORIGINS:
            oldest = min(marks, key=lambda o: marks[o][1])
            del marks[oldest]
        return True

    def dispatch(self, env: Envelope) -> None:
        handler = getattr(self, "on_" + env.type.replace(".", "_"), None)
        if handler is None or env.type.startswith("_"):
            raise UnknownMessage(f"{self.kind} has no handler for {env.type!r}")
        handler(env.body, env)

    def snapshot(self) -> tuple[dict, dict]:
        return self.state, self.meta

    # -- for handlers ------------------------------------------------------------------------
    def emit(self, type: str, *, session_id: str = "", payload: dict | None = None, **columns: str) -> Event:
        """Record an event; its seq is this actor's own, strictly increasing."""
        self.meta["q"] += 1
        event = Event(
            merchant_id=self.ref.merchant, type=type, actor_key=self.ref.key, seq=self.meta["q"],
            session_id=session_id, payload=payload or {}, ts=int(self.clock() * 1000), **columns,
        )
        self.turn.events.append(event)
        return event

    def send(self, target: ActorRef, type: str, body: dict | None = None) -> None:
        if target.merchant != self.ref.merchant:
            raise PermissionError(f"{self.ref} may not message {target}: another merchant")
        self.turn.sends.append(Envelope(target, type, body or {}))

    def push(self, connection: str, frame: dict) -> None:
        """Send `frame` to a client connection ("<gateway id>/<connection id>") after this turn
        is committed. At most once: a client that misses pushes (its gateway died) resumes from
        the actor's log by sequence number."""
        self.turn.pushes.append((connection, frame))

    def ask(self, service: str, request: dict) -> None:
        """Ask a worker pool outside the hosts (the bot) after this turn is committed; its
        answer comes back to this actor as the envelope `<service>_reply`. At most once and
        not ordered with anything else: an actor that asks sets a timer for a missing answer."""
        self.turn.asks.append((service, {**request, "actor": self.ref.key}))

    def enqueue(self, kind: str, /, **fields) -> None:
        """A durable side effect run by the gateways' job runner (storage/jobs.py) — a message
        sent out through a channel's platform — queued in the same commit as this turn: it
        happens (at least once, retried with back-off) exactly when the turn is durable."""
        self.turn.jobs.append((kind, fields))

    def append_log(self, seq: int, record: dict) -> None:
        """Append to this actor's durable log (committed with the turn), readable by sequence
        number: what a reconnecting client replays. `seq` must increase."""
        self.turn.logs.append((seq, record))

    def set_timer(self, name: str, delay: float, type: str, body: dict | None = None) -> None:
        """After `delay` seconds, this actor receives `type` with `body`. Timers survive
        passivation, draining and a host restart (they are part of the snapshot)."""
        self.meta["t"][name] = [self.clock() + delay, type, body or {}]

    def cancel_timer(self, name: str) -> None:
        self.meta["t"].pop(name, None)

    def due_timers(self, now: float) -> list[Envelope]:
        due = [(n, t) for n, t in self.meta["t"].items() if t[0] <= now]
        for name, _ in due:
            del self.meta["t"][name]
        return [Envelope(self.ref, t[1], t[2]) for _, t in sorted(due, key=lambda x: x[1][0])]

    def next_timer(self) -> float | None:
        return min((t[0] for t in self.meta["t"].values()), default=None)
