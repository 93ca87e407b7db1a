"""Sending envelopes to hosts: one channel per destination host, one batch in flight on it.

Whatever is queued while a batch is in flight rides the next one (adaptive batching: measured
p99 25 ms at 1k msgs/s and 130 ms at 100k msgs/s on 4 hosts, where a fixed flush timer gave
535 ms). One batch in flight is also what keeps envelopes in order per (sender -> host): an
async Ray actor runs concurrent calls out of order.

A router belongs to one origin (a driver, a gateway, a host incarnation) and numbers every
envelope it originates, so receivers can drop re-sent ones. When the placement table changes
the router waits until every channel is idle before it sends under the new table: otherwise an
envelope routed by the new table could overtake one still travelling by the old.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Awaitable, Callable

from .envelope import Envelope, encode_batch
from .placement import PlacementTable
from .transport import HostTransport, HostUnavailable

log = logging.getLogger(__name__)

MAX_BATCH = 512          # envelopes per call; 128-512 measured within 10 % of each other
RETRY_FIRST = 0.05       # seconds; doubles up to RETRY_MAX while a host is unreachable
RETRY_MAX = 1.0


class Channel:
    """Envelopes to one host. `send` returns a future resolved when the batch holding them was
    acknowledged (with the host's table version), or failed with a non-retryable error."""

    def __init__(self, dest: str, transport: HostTransport, version: Callable[[], int],
                 on_version: Callable[[int], None], on_pushes: Callable[[list], object] | None = None,
                 sender: str = "", on_batch_done: Callable[[str, float, int], object] | None = None):
        self.dest = dest
        self.on_batch_done = on_batch_done
        self.transport = transport
        self.version = version
        self.on_version = on_version
        self.on_pushes = on_pushes
        self.sender = sender
        self.queue: deque[tuple[list[Envelope], asyncio.Future]] = deque()
        self.pump: asyncio.Task | None = None
        self.sent_batches = 0
        self.retries = 0

    def send(self, envs: list[Envelope]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((envs, fut))
        if self.pump is None or self.pump.done():
            self.pump = asyncio.create_task(self._pump())
        return fut

    def depth(self) -> int:
        return sum(len(e) for e, _ in self.queue)

    async def idle(self) -> None:
        while self.pump is not None and not self.pump.done():
            await asyncio.shield(self.pump)

    def _take(self) -> list[tuple[list[Envelope], asyncio.Future]]:
        items, count = [], 0
        while self.queue and (not items or count + len(self.queue[0][0]) <= MAX_BATCH):
            envs, fut = self.queue.popleft()
            items.append((envs, fut))
            count += len(envs)
        return items

    async def _pump(self) -> None:
        while self.queue:
            items = self._take()
            payload = encode_batch([e for envs, _ in items for e in envs], self.version(), self.sender)
            started = time.monotonic()
            try:
                version = await self._call_until_acknowledged(payload)
            except Exception as exc:  # not retryable: the batch is refused, tell every sender
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.sent_batches += 1
            if self.on_batch_done is not None:
                self._report(time.monotonic() - started, sum(len(envs) for envs, _ in items))
            if isinstance(version, (list, tuple)):  # [version, frames for our connections]
                version, pushes = version
                if self.on_pushes is not None:
                    self.on_pushes(pushes)
            self.on_version(version)
            for _, fut in items:
                if not fut.done():
                    fut.set_result(version)

    def _report(self, seconds: float, envelopes: int) -> None:
        try:
            self.on_batch_done(self.dest, seconds, envelopes)
        except Exception:  # an observer's bug must never stall the channel
            log.exception("on_batch_done failed")

    async def _call_until_acknowledged(self, payload: bytes) -> int:
        delay = RETRY_FIRST
        while True:
            try:
                return await self.transport.call(self.dest, payload)
            except HostUnavailable as exc:
                # Never give up: an acknowledged send must not be lost. The host restarts
                # (Ray restarts it) or the operator's drain/scale moves its keys elsewhere.
                self.retries += 1
                log.warning("re-sending batch to %s in %.2fs: %s", self.dest, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)


class Router:
    """Routes envelopes by the placement table and numbers those it originates."""

    def __init__(self, name: str, transport: HostTransport, table: PlacementTable,
                 load_table: Callable[[], Awaitable[PlacementTable | None]] | None = None,
                 on_pushes: Callable[[list], object] | None = None,
                 on_batch_done: Callable[[str, float, int], object] | None = None):
        """`load_table` fetches the current table; it is called when a host answers with a
        newer table version than ours (after a scale-out or a drain). `on_pushes` takes the
        frames for this sender's connections that a host returns with its acknowledgement
        (a gateway's: [(connection id, frame), ...]). `on_batch_done(host, seconds, envelopes)` is
        told of every acknowledged batch: its round trip from the first attempt, re-sends
        included (metrics)."""
        self.name = name
        self.origin = f"{name}@{uuid.uuid4().hex[:12]}"
        self.transport = transport
        self.table = table
        self.load_table = load_table
        self.on_pushes = on_pushes
        self.on_batch_done = on_batch_done
        self.channels: dict[str, Channel] = {}
        self._n = 0
        self._switch = asyncio.Lock()
        self._refreshing: asyncio.Task | None = None

    def stamp(self, env: Envelope) -> Envelope:
        if not env.origin:
            self._n += 1
            env.origin, env.n = self.origin, self._n
        return env

    def channel(self, dest: str) -> Channel:
        ch = self.channels.get(dest)
        if ch is None:
            ch = self.channels[dest] = Channel(dest, self.transport, lambda: self.table.version, self._saw_version,
                                               self.on_pushes, self.name if self.on_pushes else "",
                                               self.on_batch_done)
        return ch

    def _saw_version(self, version: int) -> None:
        if version > self.table.version and self.load_table and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        table = await self.load_table()
        if table is not None:
            await self.set_table(table)

    def send_to(self, dest: str, envs: list[Envelope]) -> asyncio.Future:
        return self.channel(dest).send([self.stamp(e) for e in envs])

    async def send(self, envs: list[Envelope]) -> None:
        """Route by the table and wait until every envelope is acknowledged."""
        async with self._switch:  # not while the table is being switched
            by_host: dict[str, list[Envelope]] = {}
            for env in envs:
                by_host.setdefault(self.table.owner(env.target), []).append(self.stamp(env))
            futs = [self.channel(h).send(batch) for h, batch in by_host.items()]
        await asyncio.gather(*futs)

    async def set_table(self, table: PlacementTable) -> None:
        if table.version <= self.table.version:
            return
        async with self._switch:
            await asyncio.gather(*(ch.idle() for ch in self.channels.values()))
            self.table = table

    def depth(self) -> int:
        return sum(ch.depth() for ch in self.channels.values())
