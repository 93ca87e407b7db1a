"""The control plane: start peakdesk's Ray actors, publish the placement table, drain hosts.

Used by `peakdesk up`, the tests and the benchmarks (the same code path). It never carries
messages itself: data flows gateway -> hosts -> Redis outbox -> writers -> ClickHouse.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import orjson
import ray
import redis

from storage import crypto

from .placement import PlacementTable
from .settings import Settings

log = logging.getLogger(__name__)
HOST_WATCH_S = 2.0   # how often the process that started peakdesk looks for hosts lost with their node


def init_ray(settings: Settings) -> None:
    """Join `ray_address`, or start a local Ray cluster owned by this process."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = {"namespace": settings.namespace, "log_to_driver": True, "logging_level": logging.WARNING}
    if settings.ray_address:
        # Ray's local clusters authenticate with a token kept in ~/.ray/auth_token (or given by
        # RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH); a process joining one must say it uses it.
        try:
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available)
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except ImportError:  # a Ray without token authentication
            pass
        ray.init(address=settings.ray_address, **common)
    else:
        # address="local": never attach to some other cluster left on this machine; a small
        # object store: the default takes 30 % of RAM in /dev/shm, we pass only small batches.
        ray.init(address="local", include_dashboard=False,
                 object_store_memory=settings.object_store_mb * 1024 * 1024, **common)


class Cluster:
    def __init__(self, settings: Settings):
        if not settings.redis_url:
            raise ValueError("Cluster needs settings.redis_url (peakdesk up starts Redis first)")
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.hosts: dict[str, object] = {}
        self.writers: dict[str, object] = {}
        self.gateways: dict[str, object] = {}
        self.bots: dict[str, object] = {}
        self.gateway_port: int | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- placement -----------------------------------------------------------------------------
    def table(self) -> PlacementTable | None:
        raw = self.redis.get(f"{self.settings.prefix}placement")
        return PlacementTable.from_dict(orjson.loads(raw)) if raw else None

    def publish(self, table: PlacementTable) -> None:
        """Store the table, then tell every host (each waits for its channels to go idle)."""
        self.redis.set(f"{self.settings.prefix}placement", orjson.dumps(table.to_dict()))
        ray.get([h.set_table.remote(table.to_dict()) for h in self.hosts.values()])

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, gateway: bool = True, timeout: float = 60.0) -> None:
        from . import remote

        init_ray(self.settings)
        s, cfg = self.settings, self.settings.to_dict()
        crypto.ensure_own_master_key(s.master_key_file, s.master_key_path)   # as `peakdesk up` makes it
        crypto.configure_lazily(s.master_key_path)    # this process seals with it too (the demo merchant...)
        t0 = time.monotonic()
        # On a multi-node cluster the writers (embedded chDB is a local directory) and the gateway
        # (the address clients were given) stay on the node that starts peakdesk.
        here = ray.get_runtime_context().get_node_id() if s.ray_address else None
        for i in range(s.writers):
            self.writers[f"writer-{i}"] = remote.writer_actor(f"writer-{i}", i, s, node=here)
        ray.get([w.wait_ready.remote() for w in self.writers.values()], timeout=timeout)
        for i in range(s.bot_workers):  # loading models takes seconds: started first, awaited last
            self.bots[f"bot-{i}"] = remote.bot_actor(f"bot-{i}", cfg, s.namespace)
        ids = [f"host-{i}" for i in range(s.hosts)]
        old = self.table()
        table = PlacementTable((old.version if old else 0) + 1, tuple(ids))
        self.redis.set(f"{s.prefix}placement", orjson.dumps(table.to_dict()))
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive")) if s.ray_address else []
        for i, hid in enumerate(ids):  # on a multi-node cluster, round robin over the nodes
            node = nodes[i % len(nodes)] if len(nodes) > 1 else None
            self.hosts[hid] = remote.host_actor(hid, i, cfg, s.namespace, node=node)
        ray.get([h.wait_ready.remote() for h in self.hosts.values()], timeout=timeout)
        # before the gateway: once it answers health checks, the bot answers customers too
        ray.get([b.wait_ready.remote() for b in self.bots.values()], timeout=timeout)
        if gateway:
            gw = self.gateways["gateway-0"] = remote.gateway_actor("gateway-0", cfg, s.namespace, node=here)
            self.gateway_port = ray.get(gw.wait_ready.remote(), timeout=timeout)
        from .scaling import save_settings, save_shape

        save_shape(self)
        save_settings(self)
        log.info("cluster up in %.1fs: %d hosts, %d writers, %d bot workers", time.monotonic() - t0, len(ids),
                 s.writers, len(self.bots))
        self._watcher = threading.Thread(target=self._watch_hosts, name="peakdesk-host-watch", daemon=True)
        self._watcher.start()

    # -- hosts lost with their node -------------------------------------------------------------
    def _watch_hosts(self) -> None:
        """Ray restarts a crashed host by itself, but not one pinned to a node that is gone (a
        machine lost without `peakdesk drain`): that host is dead for good, and every
        conversation placed on it would wait forever. Such a host is started again here, on a
        node Ray picks, under its name: like after any crash, its actors come back from Redis
        and it re-sends what it had committed and not delivered."""
        while not self._stopping.wait(HOST_WATCH_S) and ray.is_initialized():
            for name, handle in list(self.hosts.items()):
                if self._stopping.is_set():
                    return
                try:
                    ray.get(handle.pid.remote(), timeout=5)
                except ray.exceptions.ActorUnschedulableError:
                    self._replace_host(name)
                except Exception:  # restarting, busy, or removed on purpose: not ours to handle
                    continue

    def _replace_host(self, name: str) -> None:
        from . import remote

        table = self.table()
        if table is None or name not in table.hosts or self._stopping.is_set():
            return   # scaled in meanwhile: it is meant to be gone
        tail = name.rpartition("-")[2]
        log.warning("host %s was lost with its Ray node: starting it again on another node", name)
        try:
            handle = remote.host_actor(name, int(tail) if tail.isdigit() else 0, self.settings.to_dict(),
                                       self.settings.namespace)
            ray.get(handle.wait_ready.remote(), timeout=60)
        except Exception:  # tried again next period
            log.exception("could not start host %s again", name)
            return
        self.hosts[name] = handle

    def stop(self) -> None:
        """Gateways first (clients are told to reconnect elsewhere), then hosts, then writers
        (they finish the batch in hand; the rest stays in the outbox). Also what `peakdesk
        scale` added from other shells (the shape in Redis names it)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=15)
        self._adopt()
        if self.gateways:
            try:
                ray.get([g.say_goodbye.remote("peakdesk stopping") for g in self.gateways.values()], timeout=5)
            except Exception:  # stopping anyway
                log.warning("gateways did not say goodbye in time")
        for handle in self.gateways.values():
            ray.kill(handle, no_restart=True)
        self.gateways.clear()
        if self.hosts:
            try:
                ray.get([h.stop.remote() for h in self.hosts.values()], timeout=10)
            except Exception:  # stopping anyway: nothing uncommitted was acknowledged
                log.warning("hosts did not stop in time")
            for handle in self.hosts.values():
                ray.kill(handle, no_restart=True)
            self.hosts.clear()
        for handle in self.bots.values():  # stateless: nothing to finish
            ray.kill(handle, no_restart=True)
        self.bots.clear()
        if self.writers:
            try:
                ray.get([w.stop.remote() for w in self.writers.values()], timeout=15)
            except Exception:  # stopping anyway: the outbox keeps what was not written
                log.exception("writers did not stop cleanly")
            for handle in self.writers.values():
                ray.kill(handle, no_restart=True)
            self.writers.clear()
        self.redis.close()

    def _adopt(self) -> None:
        try:
            raw = self.redis.get(f"{self.settings.prefix}cluster")
        except redis.RedisError:
            return
        shape = orjson.loads(raw) if raw else {}
        for kind, names in (("hosts", shape.get("hosts", [])), ("gateways", shape.get("gateways", [])),
                            ("bots", [f"bot-{i}" for i in range(int(shape.get("bots", 0)))])):
            known = getattr(self, kind)
            for name in names:
                if name not in known:
                    try:
                        known[name] = ray.get_actor(name, namespace=self.settings.namespace)
                    except ValueError:
                        pass  # gone already

    # -- operations ----------------------------------------------------------------------------
    def drain(self, host_id: str, timeout: float = 120.0) -> int:
        """Move every activation off `host_id`; returns how many moved. The host stays up
        (it forwards stragglers) until the operator removes it."""
        table = self.table()
        if table is None or host_id not in table.hosts:
            raise LookupError(f"no host {host_id!r} in the placement table")
        self.publish(table.with_draining(host_id))
        return ray.get(self.hosts[host_id].drain.remote(), timeout=timeout)

    def host_pids(self) -> dict[str, int]:
        return dict(zip(self.hosts, ray.get([h.pid.remote() for h in self.hosts.values()])))

    def statistics(self) -> dict[str, dict]:
        return dict(zip(self.hosts, ray.get([h.statistics.remote() for h in self.hosts.values()])))
