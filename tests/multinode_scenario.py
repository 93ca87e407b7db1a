"""A two-node Ray cluster on this machine (two raylets, as `ray start` runs them, via
ray.cluster_utils), peakdesk on it, conversation traffic running throughout while the cluster
is scaled out, rebalanced, scaled in, and one node is drained and removed. Run by
tests/test_multinode.py in its own process (one Ray cluster per process); prints one JSON
object with what it saw.

    python -m tests.multinode_scenario OUT.json
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import orjson  # noqa: E402
import ray  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from ray.cluster_utils import Cluster as RayCluster  # noqa: E402

from actors import scaling  # noqa: E402
from actors.cluster import Cluster  # noqa: E402
from actors.envelope import ActorRef, Envelope  # noqa: E402
from actors.placement import PlacementTable  # noqa: E402
from actors.router import Router  # noqa: E402
from actors.settings import Settings  # noqa: E402
from actors.transport import RayTransport  # noqa: E402
from storage.redis_server import start_redis  # noqa: E402
from tests.storage_helpers import opened_payload  # noqa: E402

MERCHANT = "m-multi"
SESSIONS = 200
ROUNDS = 40
ROUND_GAP_S = 0.8


def traffic(settings: Settings, done: dict) -> None:
    """ROUNDS messages to each session, numbered, a round every ROUND_GAP_S; each round waits
    until every envelope is acknowledged (what a gateway does for its clients)."""
    async def main():
        r = aioredis.from_url(settings.redis_url)

        async def load_table():
            raw = await r.get(f"{settings.prefix}placement")
            return PlacementTable.from_dict(orjson.loads(raw)) if raw else None

        router = Router("traffic", RayTransport(settings.namespace), await load_table(), load_table=load_table)
        sessions = [ActorRef("session", MERCHANT, f"s{i}") for i in range(SESSIONS)]
        for n in range(ROUNDS):
            t0 = time.monotonic()
            await router.send([Envelope(s, "message", {"n": n}) for s in sessions])
            done["rounds"] = n + 1
            done.setdefault("round_s", []).append(round(time.monotonic() - t0, 3))
            table = await load_table()
            if table is not None and table.version > router.table.version:
                await router.set_table(table)   # a gateway reloads it every heartbeat
            await asyncio.sleep(ROUND_GAP_S)
        await r.aclose()
    try:
        asyncio.run(main())
    except BaseException as exc:  # reported, not swallowed
        done["error"] = repr(exc)


def main(out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pd-multinode-"))
    rc = RayCluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 128 * 1024 * 1024})
    node_b = rc.add_node(num_cpus=2, object_store_memory=128 * 1024 * 1024)
    rc.wait_for_nodes()
    redis_server = start_redis(tmp / "redis")
    settings = Settings(data_dir=tmp / "data", redis_url=redis_server.url, hosts=2, ray_address=rc.address,
                        namespace="pd-multinode", prefix="mn:", bot_workers=0)
    report: dict = {"steps": []}
    c = None
    try:
        ray.init(address=rc.address, namespace=settings.namespace, logging_level="WARNING")
        c = Cluster(settings)
        c.start(gateway=False)
        report["nodes"] = scaling.alive_nodes()
        report["hosts_at_start"] = scaling.host_nodes(c)
        load: dict = {}
        thread = threading.Thread(target=traffic, args=(settings, load), daemon=True)
        thread.start()

        def step(name, fn):
            while load.get("rounds", 0) < 3 + 6 * len(report["steps"]):  # let traffic run between steps
                time.sleep(0.2)
            t0 = time.monotonic()
            result = fn()
            report["steps"].append({"step": name, "result": result, "seconds": round(time.monotonic() - t0, 1),
                                    "during_round": load.get("rounds", 0)})

        step("scale out to 4 hosts", lambda: scaling.scale(c, hosts=4))
        report["hosts_after_scale_out"] = scaling.host_nodes(c)
        step("rebalance", lambda: scaling.rebalance(c))
        step("scale in to 3 hosts", lambda: scaling.scale(c, hosts=3))
        step("drain node B", lambda: scaling.drain_node(c, node_b.node_id))
        rc.remove_node(node_b)      # the node leaves the Ray cluster
        report["steps"].append({"step": "node B removed from Ray", "result": scaling.alive_nodes()})
        thread.join(timeout=300)
        report["traffic"] = load
        report["hosts_at_end"] = scaling.host_nodes(c)
        report["table"] = c.table().to_dict()
        # every session reachable: one more message each, acknowledged, and its count right
        report["final_round"] = final_check(c, settings)
        report["events"] = events_check(c)
    finally:
        out.write_text(json.dumps(report, default=str, indent=1))
        if c is not None:
            c.stop()
        ray.shutdown()
        rc.shutdown()
        redis_server.stop()


def final_check(c: Cluster, settings: Settings) -> dict:
    async def send():
        router = Router("final", RayTransport(settings.namespace), c.table())
        await router.send([Envelope(ActorRef("session", MERCHANT, f"s{i}"), "message", {"n": ROUNDS})
                           for i in range(SESSIONS)])
    asyncio.run(send())
    counts = {}
    owners = {}
    table = c.table()
    for i in range(SESSIONS):
        ref = ActorRef("session", MERCHANT, f"s{i}")
        owner = table.owner(ref)
        state = ray.get(c.hosts[owner].actor_state.remote(ref.key), timeout=30)
        counts[ref.id] = None if state is None else state["state"]["messages"]
        owners[ref.id] = owner
    return {"expected": ROUNDS + 1, "wrong": {k: v for k, v in counts.items() if v != ROUNDS + 1},
            "owners": sorted(set(owners.values()))}


def events_check(c: Cluster, timeout: float = 120) -> dict:
    writer = c.writers["writer-0"]
    want = SESSIONS * (ROUNDS + 1)
    deadline = time.monotonic() + timeout
    while True:
        n = ray.get(writer.query.remote("SELECT count() FROM events WHERE merchant_id = {m:String}"
                                        " AND type = 'message.sent'", {"m": MERCHANT}))[0][0]
        if n >= want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rows = ray.get(writer.query.remote("SELECT session_id, seq, payload, event_id FROM events WHERE merchant_id = {m:String}"
                                       " AND type = 'message.sent'", {"m": MERCHANT}))
    by_session: dict[str, list] = {}
    for sid, seq, payload, _ in rows:
        n = opened_payload(c.settings.redis_url, c.settings.prefix, MERCHANT, payload)["n"]
        by_session.setdefault(sid, []).append((seq, n))
    bad = {sid: [n for _, n in sorted(p)] for sid, p in by_session.items()
           if [n for _, n in sorted(p)] != list(range(ROUNDS + 1))}
    return {"rows": len(rows), "expected": want, "distinct_ids": len({r[3] for r in rows}),
            "sessions": len(by_session), "out_of_order_or_missing_or_twice": dict(list(bad.items())[:5]),
            "bad_sessions": len(bad)}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
