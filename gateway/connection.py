"""One client connection on this gateway: its principal, its encoding, its bounded outgoing
queue and the writer that drains it, its rate limit. And the hub: this gateway's connections.

Order and once-ness per connection: every frame for the client goes through the one queue and
the one writer; `msg` frames of a session are sent in `seq` order and at most once (the writer
remembers the last seq it sent per session), and a `subscribed` push makes the writer replay
the session's log from where the client was before it continues — so replayed and live
messages never overlap or leave a gap.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from .auth import Principal
from .protocol import CLOSE_SLOW, encode

log = logging.getLogger(__name__)

QUEUE_FRAMES = 1000          # outgoing frames a connection may have waiting; then it is too slow
FRAMES_PER_S, BURST = 20, 40
MAX_REFUSALS = 100           # rate-limited frames before the connection is closed (4429)

ReadLog = Callable[[str, str, int, int], Awaitable[list[tuple[int, dict]]]]  # merchant, session, after, upto


class TokenBucket:
    def __init__(self, rate: float = FRAMES_PER_S, burst: int = BURST, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(eq=False)
class Connection:
    id: str
    principal: Principal
    binary: bool
    send: Callable[[str | bytes], Awaitable[None]]
    close: Callable[[int, str], Awaitable[None]]
    read_log: ReadLog
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    last_seq: dict[str, int] = field(default_factory=dict)
    bucket: TokenBucket = field(default_factory=TokenBucket)
    refusals: int = 0
    closing: bool = False
    agent_view: dict | None = None  # the last `agent` frame (status, capacity, load): presence
    monitoring: bool = False        # a supervisor watching the live picture (gateway/monitor.py)
    ip: str = "?"                   # the client's address (gateway/limits.py's client_ip)

    def offer(self, frame: dict) -> None:
        """Queue a frame for the client; a client that let its queue fill is closed (4001)."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.closing = True
            asyncio.get_running_loop().create_task(self.close(CLOSE_SLOW, "too slow: reconnect and resume"))

    async def write_forever(self) -> None:
        while True:
            frame = await self.queue.get()
            t = frame.get("t")
            if t == "subscribed":
                await self._replay(frame)
            elif t == "msg":
                await self._send_msg(frame)
            elif t == "ack" and "session" in frame:
                await self._send_ack(frame)
            else:  # acks of team chat carry a room, not a session: no sequence to keep
                await self.send(encode(frame, self.binary))

    async def _send_msg(self, frame: dict) -> None:
        session, seq = frame["session"], frame["seq"]
        last = self.last_seq.get(session)
        if last is not None and seq <= last:
            return  # already sent (a replay overlapping live pushes)
        if last is not None and seq > last + 1:
            await self._fill_gap(session, last, seq - 1)  # a push was lost or overtaken: the log has it
        self.last_seq[session] = seq
        await self._deliver(frame)

    async def _deliver(self, frame: dict) -> None:
        """Internal notes take a place in the sequence but are never shown to a customer."""
        if frame.get("internal") and self.principal.kind in ("customer", "visitor"):
            return
        await self.send(encode(frame, self.binary))

    async def _send_ack(self, frame: dict) -> None:
        """The client's own message has this seq: it needs no `msg` for it, but whatever others
        said before it must reach the client first."""
        session, seq = frame["session"], frame["seq"]
        last = self.last_seq.get(session)
        if last is not None and seq > last:
            if seq > last + 1:
                await self._fill_gap(session, last, seq - 1)
            self.last_seq[session] = seq
        await self.send(encode(frame, self.binary))

    async def _fill_gap(self, session: str, after: int, upto: int) -> None:
        for seq, entry in await self.read_log(self.principal.merchant, session, after, upto):
            if seq == self.last_seq.get(session, after) + 1:
                self.last_seq[session] = seq
                await self._deliver(entry)

    async def _replay(self, frame: dict) -> None:
        session, after, upto = frame["session"], frame["after"], frame["last_seq"]
        await self.send(encode({k: v for k, v in frame.items() if k != "after"}, self.binary))  # with its state
        self.last_seq[session] = max(self.last_seq.get(session, 0), after)
        while self.last_seq[session] < upto:
            entries = await self.read_log(self.principal.merchant, session, self.last_seq[session], upto)
            if not entries:
                break  # expired from the log (older than its TTL): history is in ClickHouse
            for _, entry in entries:
                await self._send_msg(entry)
        await self.send(encode({"t": "resumed", "session": session, "last_seq": upto}, self.binary))


class Hub:
    """This gateway's connections, by id."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.by_ip: dict[str, int] = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)

    def deliver(self, items: list[tuple[str, dict]]) -> int:
        """Pushes from actors; returns how many found their connection."""
        found = 0
        for conn_id, frame in items:
            conn = self.connections.get(conn_id)
            if conn is not None:
                if frame.get("t") == "agent":
                    conn.agent_view = frame
                conn.offer(frame)
                found += 1
        return found

    def statistics(self) -> dict:
        return {"connections": len(self.connections),
                "queued": sum(c.queue.qsize() for c in self.connections.values())}
