"""An actor host: thousands of activations in one process, driven by one loop of rounds.

A round takes every batch that arrived since the last one (plus due timers), activates the
actors it needs (one Redis pipeline: directory claims and snapshots), forwards envelopes for
actors that live elsewhere, runs each local envelope through its actor synchronously — local
sends between actors are direct calls, handled in the same round — and commits the whole round
in one MULTI (events to the outbox, snapshots, pending outgoing). Only then are the senders
acknowledged and the round's cross-host messages sent. While a round commits, new batches
queue and ride the next round together: group commit, one Redis round trip per round.

Because rounds run strictly one after another, there is no race between activation,
passivation and draining: they are steps of the same loop.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import uuid
from collections import deque
from typing import Awaitable, Callable

from storage.actor_store import ActorStore, RoundCommit, StoreUnavailable, pack_snapshot

from .base import Actor, Rejected
from .envelope import ActorRef, Envelope, decode_batch_from
from .placement import PlacementTable
from .router import Router
from .transport import HostTransport

log = logging.getLogger(__name__)

# Local sends (actor to actor on this host) run in the same round, pass after pass; a chain
# longer than this continues in a later round via the pending-outgoing stream, so one endless
# ping-pong can't hold the round (and every sender's acknowledgement) forever.
MAX_LOCAL_PASSES = 64
PUSH_BATCH = 1000        # frames per call to a gateway
MAX_HOPS = 8             # forwarding beyond this means the tables disagree; claim it here
HEARTBEAT_S = 2.0        # host heartbeat period; the key lives HEARTBEAT_TTL_S
HEARTBEAT_TTL_S = 10     # a host silent this long loses its activations to others
PASSIVATE_CHECK_S = 5.0


class ActorHost:
    def __init__(self, host_id: str, store: ActorStore, transport: HostTransport,
                 kinds: dict[str, type[Actor]], table: PlacementTable,
                 clock: Callable[[], float] = time.time, idle_s: float = 600.0,
                 on_heartbeat: Callable[[dict], "asyncio.Future"] | None = None,
                 pusher: Callable[[str, list], Awaitable[None]] | None = None,
                 asker: Callable[[str, list], Awaitable[list]] | None = None):
        """`pusher(gateway_id, [(connection_id, frame), ...])` delivers pushes to a gateway;
        `asker(service, [request, ...])` sends actors' requests to a worker pool and returns
        the answers, each `{"actor": key, "type": envelope type, "body": ...}`."""
        self.id = host_id
        self.store = store
        self.kinds = kinds
        self.clock = clock
        self.idle_s = idle_s
        self.on_heartbeat = on_heartbeat
        self.pusher = pusher
        self.asker = asker
        self._asks: list[tuple[str, dict]] = []     # this round's requests to worker pools
        self._asking: set[asyncio.Task] = set()
        self.router = Router(host_id, transport, table, load_table=self._load_table)
        self.active: dict[ActorRef, Actor] = {}
        self.inbox: deque[tuple[list[Envelope], asyncio.Future, str]] = deque()  # (envelopes, ack, sender)
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self._drain_request: asyncio.Future | None = None
        self._rebalance_request: asyncio.Future | None = None   # asked for, not yet in a round
        self._rebalancing: asyncio.Future | None = None         # in the round being committed
        self._moved_now = 0
        self._drained = 0       # activations released since the table marked us draining
        self._was_draining = False
        self._last_passivate = clock()
        self._timers: list[tuple[float, int, ActorRef]] = []  # (due, tie-break, actor); stale entries skipped
        self._armed: dict[ActorRef, float] = {}               # the wake-up each actor has in the heap
        self._timer_seq = itertools.count()
        self._incarnation = uuid.uuid4().hex[:12]
        self._round_no = 0
        self._sending: set[asyncio.Task] = set()  # cross-host sends after commits
        self._push_queues: dict[str, deque] = {}
        self._push_pumps: dict[str, asyncio.Task] = {}
        self.stats = {"rounds": 0, "handled": 0, "duplicates": 0, "errors": 0, "forwarded": 0,
                      "activated": 0, "passivated": 0, "commits_retried": 0, "push_failures": 0, "rejected": 0,
                      "ask_failures": 0}

    @property
    def table(self) -> PlacementTable:
        return self.router.table

    @property
    def draining(self) -> bool:
        """Marked draining in the placement table: it activates nothing and gives back all."""
        return self.id in self.table.draining

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._heartbeat_once()
        await self._resend_pending()
        self.tasks = [asyncio.create_task(self._loop()), asyncio.create_task(self._heartbeats())]

    async def stop(self) -> None:
        """Stop at once, as a crash would: what is not committed is re-sent by its senders,
        what is committed but undelivered is re-sent by the next incarnation."""
        tasks = self.tasks + list(self._sending) + [c.pump for c in self.router.channels.values() if c.pump]
        tasks += list(self._push_pumps.values()) + list(self._asking)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- entry points ------------------------------------------------------------------------
    async def deliver(self, payload: bytes) -> int:
        """Handle a batch from another host or a gateway; returns our table version once every
        envelope in it is committed here or acknowledged by the host it was forwarded to."""
        version, envs, sender = decode_batch_from(payload)
        if version > self.table.version:
            await self.refresh_table()
        fut = asyncio.get_running_loop().create_future()
        self.inbox.append((envs, fut, sender))
        self.wake.set()
        pushes = await fut
        # frames for the caller's own connections ride back on the answer: one Ray call saved
        # per message on the usual path (a gateway's client talking to a session)
        return [self.table.version, pushes] if pushes else self.table.version

    async def set_table(self, table: dict) -> int:
        await self.router.set_table(PlacementTable.from_dict(table))
        return self.table.version

    async def refresh_table(self) -> None:
        table = await self._load_table()
        if table is not None:
            await self.router.set_table(table)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_table()
        except Exception:  # Redis away: the next heartbeat period tries again
            log.warning("host %s: could not refresh the placement table", self.id, exc_info=True)

    async def _load_table(self) -> PlacementTable | None:
        raw = await self.store.load_placement()
        return PlacementTable.from_dict(raw) if raw else None

    async def drain(self) -> int:
        """Move every activation to the host the table now names (the table must already mark
        this host draining); returns how many moved."""
        await self.refresh_table()
        if not self.draining:
            raise RuntimeError(f"host {self.id} is not marked draining in placement table v{self.table.version}")
        self._drain_request = asyncio.get_running_loop().create_future()
        self.wake.set()
        return await self._drain_request

    async def rebalance(self) -> int:
        """Hand the activations the current table places on other hosts to them (after a scale
        out, new conversations go to new hosts at once; this moves the old ones too); returns
        how many moved."""
        await self.refresh_table()
        if self.draining:  # giving everything back already
            return 0
        if self._rebalance_request is None:
            self._rebalance_request = asyncio.get_running_loop().create_future()
        request = self._rebalance_request
        self.wake.set()
        return await request

    def actor_state(self, key: str) -> dict | None:
        actor = self.active.get(ActorRef.parse(key))
        return None if actor is None else {"state": actor.state, "meta": actor.meta}

    def statistics(self) -> dict:
        return {"host": self.id, "activations": len(self.active), "mailbox": sum(len(e) for e, _, _ in self.inbox),
                "outgoing": self.router.depth(), "table_version": self.table.version,
                "draining": self.draining, **self.stats}

    # -- the loop ----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await self._wait_for_work()
            try:
                await self._round()
            except Exception:  # the loop must not die; the batches in it were failed below
                log.exception("host %s: round failed", self.id)

    async def _wait_for_work(self) -> None:
        if self.inbox or (self._drain_request and not self._drain_request.done()) or self._rebalance_request:
            return
        due = self._timers[0][0] if self._timers else None
        timeout = PASSIVATE_CHECK_S if due is None else max(0.0, min(PASSIVATE_CHECK_S, due - self.clock()))
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _round(self) -> None:
        items = list(self.inbox)
        self.inbox.clear()
        self._asks = []
        commit = RoundCommit()
        try:
            envs = [e for envs, _, _ in items for e in envs] + self._due_timers()
            forwards = await self._process(envs, commit)
            released = self._housekeeping(commit)
            await self._commit(commit)
        except Exception as exc:
            for _, fut, _ in items:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        self.stats["rounds"] += 1
        self._after_commit(items, forwards, released, commit)

    def _due_timers(self) -> list[Envelope]:
        now, envs = self.clock(), []
        while self._timers and self._timers[0][0] <= now:
            due, _, ref = heapq.heappop(self._timers)
            if self._armed.get(ref) == due:
                del self._armed[ref]
            actor = self.active.get(ref)
            if actor is not None:
                envs.extend(actor.due_timers(now))
                self._arm(actor)
        return envs

    def _arm(self, actor: Actor) -> None:
        """Keep one wake-up per actor in the heap, at or before its next timer: a timer pushed
        later (an idle timer restarted by every message) costs nothing until the wake-up finds
        it not yet due and re-arms — the heap stays ~one entry per actor with timers."""
        due = actor.next_timer()
        if due is None:
            return
        armed = self._armed.get(actor.ref)
        if armed is not None and armed <= due:
            return
        self._armed[actor.ref] = due
        heapq.heappush(self._timers, (due, next(self._timer_seq), actor.ref))

    async def _process(self, envs: list[Envelope], commit: RoundCommit) -> list[asyncio.Future]:
        """Handle envelopes in order; sends between actors of this host join the same round.
        Returns the futures of envelopes forwarded to other hosts (senders' acks wait for them).
        Only envelopes that arrived from outside are forwarded before the commit: what our own
        actors send leaves after the commit, as pending outgoing, so a crash can't send it twice."""
        forwards: list[asyncio.Future] = []
        dirty: dict[ActorRef, Actor] = {}
        pending, external, passes = envs, True, 0
        while pending:
            passes += 1
            if passes > MAX_LOCAL_PASSES:  # a chain of local sends: finish it next round, durably
                commit.outgoing.extend(e.to_wire() for e in pending)
                break
            elsewhere = await self._activate([e.target for e in pending if e.target not in self.active])
            local_sends: list[Envelope] = []
            for env in pending:
                actor = self.active.get(env.target)
                if actor is not None:
                    if self._handle(actor, env, commit, local_sends):
                        dirty[env.target] = actor
                elif external:
                    forwards.append(self._forward(env, elsewhere.get(env.target, "")))
                else:
                    commit.outgoing.append(env.to_wire())
            pending, external = self._split_sends(local_sends, commit), False
        for ref, actor in dirty.items():
            commit.snapshots[(ref.kind, ref.merchant, ref.id)] = pack_snapshot(*actor.snapshot())
        return forwards

    def _handle(self, actor: Actor, env: Envelope, commit: RoundCommit, local_sends: list[Envelope]) -> bool:
        """Run one envelope through its actor; True if the actor's state may have changed."""
        actor.last_active = self.clock()
        if env.type == "_wake":
            return False
        if not actor.accepts(env):
            self.stats["duplicates"] += 1
            return False
        actor.turn.clear()
        try:
            actor.dispatch(env)
        except Rejected as exc:
            self.stats["rejected"] += 1
            if exc.push and exc.push[0]:
                commit.pushes.append(exc.push)
            return False
        except Exception as exc:  # a handler's bug or bad input: reject this envelope only
            self.stats["errors"] += 1
            log.warning("host %s: %s rejected %s: %s: %s", self.id, env.target, env.type, type(exc).__name__, exc)
            return True
        self.stats["handled"] += 1
        commit.events.extend(actor.turn.events)
        commit.pushes.extend(actor.turn.pushes)
        self._asks.extend(actor.turn.asks)
        ref = actor.ref
        commit.jobs.extend((kind, ref.merchant, fields) for kind, fields in actor.turn.jobs)
        commit.logs.extend((ref.kind, ref.merchant, ref.id, seq, rec) for seq, rec in actor.turn.logs)
        for s in actor.turn.sends:
            local_sends.append(self.router.stamp(s))
        if actor.meta["t"]:
            self._arm(actor)
        return True

    def _split_sends(self, sends: list[Envelope], commit: RoundCommit) -> list[Envelope]:
        """Sends to actors that live (or may live) here run this round; the rest are
        committed as pending outgoing and sent after the commit."""
        local = []
        for env in sends:
            if env.target in self.active or (self.table.owner(env.target) == self.id and not self.draining):
                local.append(env)
            else:
                commit.outgoing.append(env.to_wire())
        return local

    async def _activate(self, refs: list[ActorRef]) -> dict[ActorRef, str]:
        """Claim and activate what we may hold; returns the owner of each ref we may not."""
        refs = list(dict.fromkeys(refs))
        if not refs:
            return {}
        may = [(self.table.owner(r) == self.id and not self.draining and r.kind in self.kinds) for r in refs]
        triples = [(r.kind, r.merchant, r.id) for r in refs]
        answers = await self._until_stored(lambda retry: self.store.claim(triples, may))
        elsewhere = {}
        for ref, (owner, snap) in zip(refs, answers):
            if owner == self.id and ref.kind in self.kinds:
                actor = self.active[ref] = self.kinds[ref.kind](ref, snap, self.clock)
                self._arm(actor)
                self.stats["activated"] += 1
            else:
                elsewhere[ref] = owner
        return elsewhere

    def _forward(self, env: Envelope, owner: str) -> asyncio.Future:
        dest = owner or self.table.owner(env.target)
        problem = None
        if env.target.kind not in self.kinds:
            problem = f"unknown actor kind {env.target.kind!r}"
        elif dest == self.id or env.hops >= MAX_HOPS:
            problem = f"no host will hold {env.target} (owner {owner!r}, hops {env.hops})"
        if problem:  # dead letter: counted and logged, the batch itself still acknowledged
            self.stats["errors"] += 1
            log.error("host %s: dropping %s to %s: %s", self.id, env.type, env.target, problem)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        env.hops += 1
        self.stats["forwarded"] += 1
        return self.router.send_to(dest, [env])

    async def _commit(self, commit: RoundCommit) -> None:
        if commit.empty():
            return
        self._round_no += 1
        round_id = f"{self._incarnation}:{self._round_no}"
        await self._until_stored(lambda retry: self.store.commit(commit, round_id, retry=retry))

    async def _until_stored(self, call):
        """Redis down: the round's effects exist only in memory. Retry the same call —
        acknowledging nothing, accepting nothing new — until Redis is back."""
        delay, retry = 0.05, False
        while True:
            try:
                return await call(retry)
            except StoreUnavailable as exc:
                self.stats["commits_retried"] += 1
                log.warning("host %s: redis unavailable (%s), retrying in %.2fs", self.id, exc, delay)
                await asyncio.sleep(delay)
                delay, retry = min(delay * 2, 1.0), True

    def _after_commit(self, items, forwards, released, commit: RoundCommit) -> None:
        for ref in released:
            self.active.pop(ref, None)
        if self.draining and not self._was_draining:
            self._drained = 0  # a new drain: count from here
        self._was_draining = self.draining
        if self.draining:
            self._drained += len(released)
        if commit.outgoing:
            self._spawn_send(commit.entry, commit.outgoing)
        pushes, attached = commit.pushes, {}
        if pushes and not forwards:
            pushes, attached = self._piggyback(items, pushes)
        if pushes and self.pusher is not None:
            self._spawn_pushes(pushes)
        if self._asks and self.asker is not None:
            self._spawn_asks(self._asks)
        self._asks = []
        for _, fut, _ in items:
            if forwards:
                asyncio.create_task(_settle(fut, forwards))
            elif not fut.done():
                fut.set_result(attached.get(id(fut)))
        if self._drain_request and not self._drain_request.done() and not self.active:
            self._drain_request.set_result(self._drained)
        if self._rebalancing is not None:
            if not self._rebalancing.done():
                self._rebalancing.set_result(self._moved_now)
            self._rebalancing = None

    def _piggyback(self, items, pushes: list[tuple[str, dict]]) -> tuple[list, dict[int, list]]:
        """Pushes for a gateway that sent a batch this round go back with its acknowledgement —
        unless pushes to it are already queued or in flight (they must not be overtaken).
        Returns (the rest, {id(caller's future): [(connection id, frame), ...]})."""
        callers = {sender: fut for _, fut, sender in items if sender}  # routers that take frames back (gateways)
        rest, attached = [], {}
        for connection, frame in pushes:
            gateway, _, conn = connection.partition("/")
            fut = callers.get(gateway)
            pump = self._push_pumps.get(gateway)
            if fut is not None and not self._push_queues.get(gateway) and (pump is None or pump.done()):
                attached.setdefault(id(fut), []).append((conn, frame))
            else:
                rest.append((connection, frame))
        return rest, attached

    def _spawn_pushes(self, pushes: list[tuple[str, dict]]) -> None:
        """Queue pushes per gateway; one call in flight per gateway keeps them in order (an
        async Ray actor runs concurrent calls out of order)."""
        for connection, frame in pushes:
            gateway, _, conn = connection.partition("/")
            self._push_queues.setdefault(gateway, deque()).append((conn, frame))
        for gateway in {c.partition("/")[0] for c, _ in pushes}:
            pump = self._push_pumps.get(gateway)
            if pump is None or pump.done():
                self._push_pumps[gateway] = asyncio.create_task(self._push_pump(gateway))

    async def _push_pump(self, gateway: str) -> None:
        queue = self._push_queues[gateway]
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), PUSH_BATCH))]
            try:
                await self.pusher(gateway, batch)
            except Exception as exc:  # at most once: clients fill gaps from the log
                self.stats["push_failures"] += 1
                log.warning("host %s: push to %s failed: %s", self.id, gateway, exc)

    def _spawn_asks(self, asks: list[tuple[str, dict]]) -> None:
        by_service: dict[str, list[dict]] = {}
        for service, request in asks:
            by_service.setdefault(service, []).append(request)
        for service, requests in by_service.items():
            task = asyncio.create_task(self._ask(service, requests))
            self._asking.add(task)
            task.add_done_callback(self._asking.discard)

    async def _ask(self, service: str, requests: list[dict]) -> None:
        """Answers come back into our own inbox, as envelopes from nowhere: the round routes
        them to wherever their actor lives now. Lost answers are the askers' timers' business."""
        try:
            answers = await self.asker(service, requests)
        except Exception as exc:
            self.stats["ask_failures"] += 1
            log.warning("host %s: %d request(s) to %s failed: %s", self.id, len(requests), service, exc)
            return
        envs = [Envelope(ActorRef.parse(a["actor"]), a["type"], a["body"]) for a in answers]
        if envs:
            self.inbox.append((envs, asyncio.get_running_loop().create_future(), ""))
            self.wake.set()

    def _spawn_send(self, entry: bytes | None, wires: list[list]) -> None:
        task = asyncio.create_task(self._send_outgoing(entry, wires))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_outgoing(self, entry: bytes | None, wires: list[list]) -> None:
        await self.router.send([Envelope.from_wire(w) for w in wires])
        if entry:
            await self._until_stored(lambda retry: self.store.delivered([entry]))

    async def _resend_pending(self) -> None:
        """After a restart: what our previous incarnation committed but had not delivered.
        Queued on the channels before the first round, so nothing this incarnation sends can
        overtake it; not awaited, so two hosts restarting together don't wait on each other."""
        entries = await self._until_stored(lambda retry: self.store.pending())
        for entry, wires in entries:
            self._spawn_send(entry, wires)
        await asyncio.sleep(0)  # let those tasks queue their envelopes now

    # -- passivation and draining ------------------------------------------------------------
    def _housekeeping(self, commit: RoundCommit) -> list[ActorRef]:
        now = self.clock()
        moving = self.draining or self._rebalance_request is not None
        if self.draining:
            victims = list(self.active)
        elif self._rebalance_request is not None:  # give back what the table places elsewhere now
            victims = [r for r in self.active if self.table.owner(r) != self.id]
            self._rebalancing = self._rebalance_request
            self._rebalance_request = None
        elif now - self._last_passivate >= PASSIVATE_CHECK_S:
            self._last_passivate = now
            victims = [r for r, a in self.active.items() if now - a.last_active >= self.idle_s and not a.meta["t"]]
        else:
            return []
        for ref in victims:
            commit.releases.append((ref.kind, ref.merchant, ref.id))
            if moving:  # wake it on its new host, so it runs (and its timers) there
                commit.outgoing.append(Envelope(ref, "_wake", {}).to_wire())
        self.stats["passivated"] += len(victims)
        self._moved_now = len(victims) if moving else 0
        return victims

    async def _heartbeats(self) -> None:
        refreshing: asyncio.Task | None = None
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._heartbeat_once()
            except Exception:  # a missed heartbeat is retried next period
                log.exception("host %s: heartbeat failed", self.id)
            # A table switch waits for our channels to go idle: never hold heartbeats for it.
            if refreshing is None or refreshing.done():
                refreshing = asyncio.create_task(self._refresh_quietly())

    async def _heartbeat_once(self) -> None:
        if self.on_heartbeat is not None:
            await self.on_heartbeat(self.statistics())


async def _settle(fut: asyncio.Future, forwards: list[asyncio.Future]) -> None:
    results = await asyncio.gather(*forwards, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if fut.done():
        return
    if errors:
        fut.set_exception(errors[0])
    else:
        fut.set_result(None)
