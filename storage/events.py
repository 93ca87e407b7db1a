"""The event model and the contract of an event sink.

Every state change in peakdesk is an `Event`. Actors create them while handling a message;
the host appends them to the Redis-stream outbox (`storage.outbox`) in the same atomic commit
as the actor's snapshot, and only then acknowledges the sender. Writers move outbox batches
into an `EventSink` (ClickHouse) and acknowledge the stream after the sink accepted them.

Delivery into the sink is therefore at-least-once; the sink makes it exactly-once by event id.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

# The typed analytics columns an event may fill besides its payload. Keep this list in step
# with storage/migrations (the `events` table) — test_events checks it.
ANALYTIC_COLUMNS = ("channel", "agent_id", "customer_id", "group_id")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Event:
    """One state change. `seq` is the emitting actor's own sequence number (for a session:
    the per-session sequence clients see); `ts` is milliseconds since the epoch, UTC."""

    merchant_id: str
    type: str
    actor_key: str
    seq: int
    session_id: str = ""
    channel: str = ""
    agent_id: str = ""
    customer_id: str = ""
    group_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    ts: int = field(default_factory=now_ms)
    event_id: str = field(default_factory=new_event_id)

    def to_wire(self) -> dict[str, Any]:
        """A msgpack/JSON-able dict with stable short keys (version 1)."""
        return {
            "v": 1, "id": self.event_id, "m": self.merchant_id, "t": self.type,
            "k": self.actor_key, "q": self.seq, "s": self.session_id, "ts": self.ts,
            "ch": self.channel, "a": self.agent_id, "c": self.customer_id,
            "g": self.group_id, "p": self.payload,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Event":
        if d.get("v") != 1:
            raise ValueError(f"unsupported event wire version: {d.get('v')!r}")
        return cls(
            event_id=d["id"], merchant_id=d["m"], type=d["t"], actor_key=d["k"], seq=d["q"],
            session_id=d["s"], ts=d["ts"], channel=d["ch"], agent_id=d["a"],
            customer_id=d["c"], group_id=d["g"], payload=d["p"],
        )


class SinkUnavailable(Exception):
    """The sink could not be reached or refused the batch; nothing is known to be written.
    The caller keeps the batch and retries it later, unchanged."""


class EventSink(Protocol):
    """Where events end up (ClickHouse).

    Contract:
    - `insert(events)` is idempotent by `event_id`: inserting a batch again, or a batch that
      overlaps one already inserted, leaves every event stored exactly once. It raises
      `SinkUnavailable` when the backend is down; then it may or may not have stored the batch,
      and retrying the same batch is safe.
    - `insert` is synchronous and may block (chDB has no async client): call it from one
      worker thread, never on an event loop.
    - Every query is scoped by the caller; the sink adds no tenancy of its own.
    """

    def insert(self, events: Sequence[Event]) -> int: ...

    def ping(self) -> None: ...

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]: ...

    def close(self) -> None: ...
