"""The faults, each injected the way it happens in production, from the stage's main thread
(the thread that started Redis: redis-server dies with the thread that spawned it).

| fault    | injected                                                                             |
|----------|--------------------------------------------------------------------------------------|
| gateway  | kill -9 the gateway actor's process (Ray restarts it on the same port)               |
| host     | kill -9 the actor host holding the most activations                                  |
| writer   | `ray.kill` of the writer actor, restart allowed (what Ray does to a stuck or OOM one) |
| redis    | kill -9 redis-server; restarted `redis_down_s` later on its port and data dir (AOF)  |
| chdb     | kill -9 the process holding chDB (embedded: the writer) while it holds a batch read  |
|          | from the outbox and not yet acknowledged (an insert in flight, or just done)         |
| node     | a Ray worker node removed from the cluster without a drain (its raylet and workers   |
|          | die; ray.cluster_utils, allow_graceful=False)                                        |

Each returns a dict describing what it did (pids, names); `at` is the kill's time.monotonic.
"""
from __future__ import annotations

import os
import signal
import time

import psutil
import ray
import redis

from storage import outbox

FAULTS = ("gateway", "host", "writer", "redis", "chdb", "node")


class Injector:
    def __init__(self, pd, redis_server, redis_down_s: float = 1.0, ray_cluster=None, worker_node=None):
        self.pd, self.redis_server, self.redis_down_s = pd, redis_server, redis_down_s
        self.ray_cluster, self.worker_node = ray_cluster, worker_node

    def inject(self, fault: str) -> dict:
        return getattr(self, f"_{fault}")()

    def _gateway(self) -> dict:
        pid = ray.get(self.pd.cluster.gateways["gateway-0"].pid.remote(), timeout=30)
        at = _kill9(pid)
        return {"at": at, "what": "gateway-0", "pid": pid}

    def _host(self) -> dict:
        hosts = self.pd.cluster.hosts
        stats = ray.get([h.statistics.remote() for h in hosts.values()], timeout=30)
        name = max(zip(hosts, stats), key=lambda kv: kv[1]["activations"])[0]
        pid = ray.get(hosts[name].pid.remote(), timeout=30)
        at = _kill9(pid)
        return {"at": at, "what": name, "pid": pid}

    def _writer(self) -> dict:
        at = time.monotonic()
        ray.kill(self.pd.cluster.writers["writer-0"], no_restart=False)
        return {"at": at, "what": "writer-0 (ray.kill)"}

    def _redis(self) -> dict:
        server = self.redis_server
        pid = server.process.pid
        at = _kill9(pid)
        server.process.wait()
        time.sleep(self.redis_down_s)
        server.start()   # same port, same data dir: the AOF brings everything back
        return {"at": at, "what": f"redis-server :{server.port}", "pid": pid, "down_s": self.redis_down_s,
                "restarted_after_s": round(time.monotonic() - at, 2)}

    def _chdb(self) -> dict:
        pid = chdb_owner_pid()
        holding = _wait_for_batch_in_hand(self.pd.settings, timeout=10.0)
        at = _kill9(pid)
        return {"at": at, "what": "writer-0 (chDB owner, kill -9)", "pid": pid,
                "holding_unacknowledged_entries": holding}

    def _node(self) -> dict:
        node = self.worker_node
        hosts = {name: nid for name, nid in zip(self.pd.cluster.hosts, ray.get(
            [h.node_id.remote() for h in self.pd.cluster.hosts.values()], timeout=30))}
        at = time.monotonic()
        self.ray_cluster.remove_node(node, allow_graceful=False)
        return {"at": at, "what": f"Ray node {node.node_id[:12]}", "hosts_on_it": sorted(
            h for h, nid in hosts.items() if nid == node.node_id)}


def _kill9(pid: int) -> float:
    at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return at


def chdb_owner_pid() -> int:
    """The writer's process — the only one that opens chDB in embedded mode — among this
    process's descendants (never another peakdesk's on the same machine)."""
    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "WriterService" in " ".join(p.cmdline()) or "WriterService" in p.name():
                found.append(p.pid)
        except psutil.Error:
            continue
    if len(found) != 1:
        raise RuntimeError(f"expected one writer process among ours, found {found}")
    return found[0]


def _wait_for_batch_in_hand(settings, timeout: float) -> int:
    """Poll until the writer has read outbox entries it has not acknowledged yet; how many
    (0 if that did not happen within `timeout`: it is killed anyway)."""
    r = redis.Redis.from_url(settings.redis_url)
    streams = [outbox.stream_key(settings.prefix, s) for s in range(settings.outbox_shards)]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            pending = 0
            for stream in streams:
                try:
                    pending += int(r.xpending(stream, outbox.GROUP)["pending"])
                except redis.ResponseError:   # no group yet on that shard
                    pass
            if pending:
                return pending
            time.sleep(0.005)
        return 0
    finally:
        r.close()
