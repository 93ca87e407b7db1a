"""Actor hosts in one process (LocalTransport) against real Redis: ordering, exactly-once,
restart, draining, passivation, timers and the domain actors' message exchange."""
from __future__ import annotations

import asyncio

import msgpack
import orjson
import pytest
import redis.asyncio as aioredis

from actors.base import Actor
from actors.envelope import ActorRef, Envelope, encode_batch
from actors.host import ActorHost
from actors.kinds import KINDS
from actors.placement import PlacementTable
from actors.router import Router
from actors.transport import LocalTransport
from tests.storage_helpers import opened
from storage.actor_store import ActorStore, save_placement
from storage.events import Event


class FakeClock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Alarm(Actor):
    kind = "alarm"

    def initial_state(self):
        return {"rang": 0}

    def on_set(self, body, env):
        self.set_timer("ring", body["delay"], "ring")

    def on_ring(self, body, env):
        self.state["rang"] += 1
        self.emit("alarm.rang")


class LocalCluster:
    """N hosts sharing one Redis and one LocalTransport."""

    def __init__(self, redis_url: str, prefix: str, n: int, clock=None, idle_s: float = 600.0):
        self.redis_url, self.prefix, self.n = redis_url, prefix, n
        self.clock = clock or FakeClock()
        self.idle_s = idle_s
        self.transport = LocalTransport()
        self.table = PlacementTable(1, tuple(f"host-{i}" for i in range(n)))
        self.hosts: dict[str, ActorHost] = {}
        self.r = aioredis.from_url(redis_url)
        self.pushed: list[tuple[str, str, dict]] = []  # (gateway, connection, frame)

    async def pusher(self, gateway: str, items: list) -> None:
        self.pushed.extend((gateway, conn, frame) for conn, frame in items)

    async def heartbeat(self, stats: dict) -> None:
        await self.r.set(f"{self.prefix}hb:host:{stats['host']}", orjson.dumps(stats), ex=10)

    async def start_host(self, host_id: str) -> ActorHost:
        store = ActorStore(self.r, self.prefix, host_id, shard=0)
        host = ActorHost(host_id, store, self.transport, {**KINDS, "alarm": Alarm}, self.table,
                         clock=self.clock, idle_s=self.idle_s, on_heartbeat=self.heartbeat, pusher=self.pusher)
        self.transport.hosts[host_id] = host
        self.hosts[host_id] = host
        await host.start()
        return host

    async def __aenter__(self):
        await save_placement(self.r, self.prefix, self.table.to_dict())
        for i in range(self.n):
            await self.start_host(f"host-{i}")
        return self

    async def __aexit__(self, *exc):
        for h in self.hosts.values():
            await h.stop()
        await self.r.aclose()

    def router(self, name: str = "driver") -> Router:
        return Router(name, self.transport, self.table)

    async def events(self) -> list[Event]:
        entries = await self.r.xrange(f"{self.prefix}outbox:0")
        return opened([Event.from_wire(w) for _, f in entries for w in msgpack.unpackb(f[b"b"])], self.r, self.prefix)

    def where(self, ref: ActorRef) -> list[str]:
        return [h.id for h in self.hosts.values() if ref in h.active]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_every_session_handles_its_messages_once_and_in_order(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 2) as c:
            r = c.router()
            sessions = [ActorRef("session", "m1", f"s{i}") for i in range(200)]
            for k in range(10):  # interleave: message k of every session, then k+1
                await r.send([Envelope(s, "message", {"n": k}) for s in sessions])
            assert all(len(h.active) > 20 for h in c.hosts.values())  # spread over both
            got: dict[str, list[int]] = {}
            for e in await c.events():
                got.setdefault(e.session_id, []).append((e.seq, e.payload["n"]))
            assert len(got) == 200
            for sid, seq_n in got.items():
                assert [n for _, n in sorted(seq_n)] == list(range(10)), sid
                assert [q for q, _ in seq_n] == sorted(q for q, _ in seq_n)
    run(main())


def test_a_resent_batch_is_not_handled_twice(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 1) as c:
            envs = [Envelope(ActorRef("session", "m1", "s1"), "message", {"n": i}, "gw@1", i + 1) for i in range(5)]
            payload = encode_batch(envs)
            await c.hosts["host-0"].deliver(payload)
            await c.hosts["host-0"].deliver(payload)  # the retry after a lost acknowledgement
            assert len(await c.events()) == 5
            assert c.hosts["host-0"].stats["duplicates"] == 5
    run(main())


def test_a_restarted_host_restores_state_and_still_drops_resent_envelopes(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 1) as c:
            envs = [Envelope(ActorRef("session", "m1", "s1"), "message", {"n": i}, "gw@1", i + 1) for i in range(3)]
            await c.hosts["host-0"].deliver(encode_batch(envs))
            await c.hosts["host-0"].stop()
            fresh = await c.start_host("host-0")  # same id, empty memory
            await fresh.deliver(encode_batch(envs))
            await fresh.deliver(encode_batch([Envelope(envs[0].target, "message", {"n": 3}, "gw@1", 4)]))
            state = fresh.actor_state("session:m1:s1")
            assert state["state"]["messages"] == 4
            assert [e.payload["n"] for e in await c.events()] == [0, 1, 2, 3]
    run(main())


def test_draining_moves_actors_with_their_state(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 2) as c:
            r = c.router()
            sessions = [ActorRef("session", "m1", f"s{i}") for i in range(60)]
            await r.send([Envelope(s, "message", {"n": 0}) for s in sessions])
            on_0 = [s for s in sessions if c.where(s) == ["host-0"]]
            assert on_0
            c.table = c.table.with_draining("host-0")
            await save_placement(c.r, c.prefix, c.table.to_dict())
            moved = await c.hosts["host-0"].drain()
            assert moved == len(on_0) and not c.hosts["host-0"].active
            await r.set_table(c.table)
            for _ in range(100):  # the wake-ups travel after the drain commit
                if all(c.where(s) == ["host-1"] for s in on_0):
                    break
                await asyncio.sleep(0.01)
            assert all(c.where(s) == ["host-1"] for s in on_0)
            await r.send([Envelope(s, "message", {"n": 1}) for s in sessions])
            for s in on_0:
                assert c.hosts["host-1"].actor_state(s.key)["state"]["messages"] == 2
    run(main())


def test_idle_actors_passivate_and_come_back_with_state(redis_url, prefix):
    async def main():
        clock = FakeClock()
        async with LocalCluster(redis_url, prefix, 1, clock=clock, idle_s=60) as c:
            r, s = c.router(), ActorRef("session", "m1", "idle")
            await r.send([Envelope(s, "message", {"n": 0})])
            clock.t += 3600
            await r.send([Envelope(ActorRef("session", "m1", "other"), "message", {"n": 0})])
            assert s not in c.hosts["host-0"].active
            assert not await c.r.hget(f"{prefix}m:m1:dir", "session:idle")
            await r.send([Envelope(s, "message", {"n": 1})])
            assert c.hosts["host-0"].actor_state(s.key)["state"]["messages"] == 2
    run(main())


def test_timers_fire_and_survive_a_restart(redis_url, prefix):
    async def main():
        clock = FakeClock()
        async with LocalCluster(redis_url, prefix, 1, clock=clock) as c:
            a = ActorRef("alarm", "m1", "a1")
            await c.router().send([Envelope(a, "set", {"delay": 30})])
            await c.hosts["host-0"].stop()
            fresh = await c.start_host("host-0")
            await c.router("again").send([Envelope(a, "noop_is_unknown", {})])  # activates it
            clock.t += 31
            fresh.wake.set()
            for _ in range(200):
                if [e.type for e in await c.events()].count("alarm.rang"):
                    break
                await asyncio.sleep(0.01)
            assert fresh.actor_state(a.key)["state"]["rang"] == 1
    run(main())


def test_session_queue_and_agent_exchange_messages(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 2) as c:
            r = c.router()
            agent = ActorRef("agent", "m1", "alice")
            await r.send([Envelope(agent, "status", {"status": "online", "capacity": 2, "groups": ["pre"]})])
            s = ActorRef("session", "m1", "c1")
            await r.send([Envelope(s, "open", {"customer_id": "u1", "group": "pre"})])
            for _ in range(200):
                types = [e.type for e in await c.events()]
                if "session.assigned" in types:
                    break
                await asyncio.sleep(0.01)
            assert "session.assigned" in types
            host = c.hosts[c.where(agent)[0]]
            assert c.where(agent) == c.where(ActorRef("queue", "m1", "pre"))  # merchant co-location
            for _ in range(200):
                if host.actor_state(agent.key)["state"]["sessions"] == ["c1"]:
                    break
                await asyncio.sleep(0.01)
            assert host.actor_state(agent.key)["state"]["sessions"] == ["c1"]
    run(main())


def test_an_actor_may_not_message_another_merchant(redis_url, prefix):
    class Rogue(Actor):
        kind = "session"

        def on_message(self, body, env):
            self.send(ActorRef("queue", "other-merchant", "g"), "enqueue", {"session": "x"})

    async def main():
        async with LocalCluster(redis_url, prefix, 1) as c:
            c.hosts["host-0"].kinds["session"] = Rogue
            await c.router().send([Envelope(ActorRef("session", "m1", "r"), "message", {})])
            assert c.hosts["host-0"].stats["errors"] == 1
            assert not [h for h in c.hosts.values() for ref in h.active if ref.merchant == "other-merchant"]
    run(main())


def test_nothing_is_acknowledged_while_redis_is_down_and_nothing_lost_after(tmp_path, prefix):
    from storage.redis_server import RedisServer, start_redis

    servers = [start_redis(tmp_path / "r")]

    async def main():
        async with LocalCluster(servers[0].url, prefix, 1) as c:
            r, s = c.router(), ActorRef("session", "m1", "outage")
            await r.send([Envelope(s, "message", {"n": 0})])
            servers[0].kill()
            sending = asyncio.create_task(r.send([Envelope(s, "message", {"n": 1})]))
            for _ in range(1500):  # bounded: 15 s
                if c.hosts["host-0"].stats["commits_retried"] >= 2:
                    break
                await asyncio.sleep(0.01)
            assert c.hosts["host-0"].stats["commits_retried"] >= 2
            assert not sending.done()  # not acknowledged: it is not durable yet
            servers.append(RedisServer(servers[0].data_dir, servers[0].port).start())  # same AOF
            await sending
            assert [e.payload["n"] for e in await c.events()] == [0, 1]

    try:
        run(main())
    finally:
        for server in servers:
            server.stop()


def test_messages_committed_for_a_down_host_are_sent_by_the_next_incarnation(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 2) as c:
            a = next(f"a{i}" for i in range(1000) if c.table.owner(ActorRef("echo", "m1", f"a{i}")) == "host-0")
            b = next(f"b{i}" for i in range(1000) if c.table.owner(ActorRef("echo", "m1", f"b{i}")) == "host-1")
            c.transport.down.add("host-1")
            await c.router().send([Envelope(ActorRef("echo", "m1", a), "relay", {"peer": b, "left": 1})])
            assert await c.r.xlen(f"{prefix}host:host-0:pending") == 1  # committed, not delivered
            await c.hosts["host-0"].stop()  # dies before host-1 is back
            c.transport.down.discard("host-1")
            await c.start_host("host-0")
            for _ in range(300):
                state = c.hosts["host-1"].actor_state(f"echo:m1:{b}")
                if state and await c.r.xlen(f"{prefix}host:host-0:pending") == 0:
                    break
                await asyncio.sleep(0.01)
            assert c.hosts["host-1"].actor_state(f"echo:m1:{b}")["state"]["received"] == 1
            assert await c.r.xlen(f"{prefix}host:host-0:pending") == 0
    run(main())


def test_an_endless_local_ping_pong_does_not_hold_a_round(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 1) as c:
            a, b = ActorRef("echo", "m1", "ping"), ActorRef("echo", "m1", "pong")
            await c.router().send([Envelope(a, "relay", {"peer": "pong", "left": 300})])  # acknowledged at once
            for _ in range(500):
                got = [c.hosts["host-0"].actor_state(r.key) for r in (a, b)]
                if all(got) and sum(g["state"]["received"] for g in got) == 301:
                    break
                await asyncio.sleep(0.01)
            assert sum(g["state"]["received"] for g in got) == 301
            assert c.hosts["host-0"].stats["rounds"] >= 300 // 64
    run(main())


def test_messages_are_numbered_logged_acked_once_and_pushed_to_the_others(redis_url, prefix):
    from storage.actor_store import read_log

    async def main():
        async with LocalCluster(redis_url, prefix, 2) as c:
            r, s = c.router(), ActorRef("session", "m1", "chat")
            await r.send([Envelope(s, "subscribe", {"connection": "gw-0/cust", "role": "customer"}),
                          Envelope(s, "subscribe", {"connection": "gw-1/agent", "role": "agent"})])
            msg = {"cid": "c-1", "kind": "text", "content": {"text": "在吗？"}, "connection": "gw-0/cust"}
            await r.send([Envelope(s, "message", msg)])
            await r.send([Envelope(s, "message", msg)])  # the client re-sent it: no new message
            await r.send([Envelope(s, "message", {**msg, "cid": "c-2", "content": {"text": "hello"}})])
            for _ in range(200):
                if len(c.pushed) >= 5:
                    break
                await asyncio.sleep(0.01)
            acks = [(g, f["cid"], f["seq"]) for g, conn, f in c.pushed if f["t"] == "ack"]
            assert acks == [("gw-0", "c-1", 1), ("gw-0", "c-1", 1), ("gw-0", "c-2", 2)]
            to_agent = [(f["seq"], f["content"]["text"]) for g, conn, f in c.pushed if conn == "agent"]
            assert to_agent == [(1, "在吗？"), (2, "hello")]
            host = c.hosts[c.where(s)[0]]
            log = await read_log(c.r, prefix, "m1", host.store.log_key("session", "m1", "chat"), after=1)
            assert [(seq, f["content"]["text"]) for seq, f in log] == [(2, "hello")]
            assert [e.payload["seq"] for e in await c.events() if e.type == "message.sent"] == [1, 2]
    run(main())


def _merchant_moved_by(old: PlacementTable, new: PlacementTable) -> str:
    """A merchant whose queues and agents the new table places on another host."""
    for i in range(1000):
        ref = ActorRef("queue", f"m{i}", "g")
        if old.owner(ref) != new.owner(ref):
            return f"m{i}"
    raise AssertionError("no merchant moves")


def test_a_thousand_arrivals_racing_fifty_agents_never_overfill_or_lose_one(redis_url, prefix):
    """Agents on two hosts (half activated before a scale-out moved their merchant), arrivals
    racing them as they come online: every session assigned once or still queued, none lost,
    no agent over capacity."""
    async def main():
        async with LocalCluster(redis_url, prefix, 2) as c:
            bigger = c.table.with_hosts(["host-0", "host-1", "host-2"])
            m = _merchant_moved_by(c.table, bigger)
            agents = [ActorRef("agent", m, f"a{i}") for i in range(50)]
            await c.router().send([Envelope(a, "status", {"status": "offline", "capacity": 0, "groups": ["g"]})
                                   for a in agents[:25]])  # these live on the old host
            c.table = bigger
            await save_placement(c.r, c.prefix, bigger.to_dict())
            await c.start_host("host-2")
            for h in c.hosts.values():
                await h.set_table(bigger.to_dict())
            r = c.router()
            sessions = [ActorRef("session", m, f"s{i}") for i in range(1000)]
            opens = [Envelope(s, "open", {"customer_id": f"u{i}", "group": "g"}) for i, s in enumerate(sessions)]
            onlines = [Envelope(a, "status", {"status": "online", "capacity": 1 + i % 3, "groups": ["g"]})
                       for i, a in enumerate(agents)]
            mixed = [e for pair in zip(opens[:50], onlines) for e in pair] + opens[50:]  # arrivals race agents
            await asyncio.gather(*(r.send(mixed[i:i + 37]) for i in range(0, len(mixed), 37)))
            assert len({h for a in agents for h in c.where(a)}) >= 2
            capacity = sum(1 + i % 3 for i in range(50))
            queue_host = c.hosts[c.where(ActorRef("queue", m, "g"))[0]]
            for _ in range(500):  # until every arrival reached the queue (via its customer actor)
                assigned = [e for e in await c.events() if e.type == "session.assigned"]
                q = queue_host.actor_state(f"queue:{m}:g")["state"]
                if len(assigned) >= capacity and len(q["waiting"]) + len(assigned) >= 1000:
                    break
                await asyncio.sleep(0.02)
            assert len({e.session_id for e in assigned}) == len(assigned) == capacity  # each once, all seats used
            per_agent: dict[str, int] = {}
            for e in assigned:
                per_agent[e.agent_id] = per_agent.get(e.agent_id, 0) + 1
            assert all(per_agent[f"a{i}"] == 1 + i % 3 for i in range(50))  # never over capacity
            waiting = q["waiting"]
            assert not q["offered"] and len(waiting) + len(assigned) == 1000  # none lost
            assert {e.session_id for e in assigned}.isdisjoint(w["session"] for w in waiting)
    run(main())


def test_a_silent_conversation_closes_by_itself_and_frees_its_agent(redis_url, prefix):
    async def main():
        clock = FakeClock()
        async with LocalCluster(redis_url, prefix, 1, clock=clock) as c:
            r, host = c.router(), c.hosts["host-0"]
            await r.send([Envelope(ActorRef("agent", "m1", "al"), "status",
                                   {"status": "online", "capacity": 1, "groups": ["g"]})])
            s = ActorRef("session", "m1", "quiet")
            await r.send([Envelope(s, "open", {"customer_id": "u1", "group": "g", "idle_close_s": 600})])
            for _ in range(200):
                if host.actor_state(s.key)["state"]["status"] == "assigned":
                    break
                await asyncio.sleep(0.01)
            clock.t += 599
            host.wake.set()
            await asyncio.sleep(0.1)
            assert host.actor_state(s.key)["state"]["status"] == "assigned"  # not yet
            clock.t += 2
            host.wake.set()
            for _ in range(200):
                if host.actor_state(s.key)["state"]["status"] == "closed":
                    break
                await asyncio.sleep(0.01)
            closed = [e for e in await c.events() if e.type == "session.closed"]
            assert [e.payload["by"] for e in closed] == ["idle"]
            assert closed[0].payload["handle_s"] == pytest.approx(601, abs=1)
            assert host.actor_state("agent:m1:al")["state"]["sessions"] == []  # the place is free again
            assert "csat.invited" in [e.type for e in await c.events()]
    run(main())


def test_frames_for_the_senders_own_connections_ride_back_with_its_acknowledgement(redis_url, prefix):
    async def main():
        async with LocalCluster(redis_url, prefix, 1) as c:
            host, s = c.hosts["host-0"], ActorRef("session", "m1", "pig")
            await c.router().send([Envelope(s, "open", {"customer_id": "u1", "group": "g"}),
                                   Envelope(s, "subscribe", {"connection": "gw/c1", "role": "customer"}),
                                   Envelope(s, "subscribe", {"connection": "other/c2", "role": "agent"})])
            msg = Envelope(s, "message", {"cid": "k1", "kind": "text", "content": {"text": "在吗"},
                                          "connection": "gw/c1"}, "gw@1", 1)
            answer = await host.deliver(encode_batch([msg], c.table.version, sender="gw"))
            version, frames = answer
            assert version == c.table.version
            assert [(conn, f["t"], f["cid"]) for conn, f in frames] == [("c1", "ack", "k1")]
            for _ in range(100):  # the other gateway's frame goes the usual way
                if c.pushed:
                    break
                await asyncio.sleep(0.01)
            assert [(g, conn, f["t"]) for g, conn, f in c.pushed] == [("other", "c2", "msg")]
            plain = Envelope(s, "message", {"cid": "k2", "kind": "text", "content": {"text": "hi"},
                                            "connection": "gw/c1"}, "gw@1", 2)
            assert await host.deliver(encode_batch([plain], c.table.version)) == c.table.version  # no sender
    run(main())
