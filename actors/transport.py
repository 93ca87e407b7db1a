"""How a batch reaches another host. The Ray transport is the product's; the in-process one
lets the host logic be tested against real Redis without starting Ray processes.

Contract: `call(host_id, payload)` returns once the host committed (or forwarded and had
acknowledged) every envelope in the batch, and returns the host's placement table version.
It raises `HostUnavailable` when the host could not be reached or died during the call — then
the batch may or may not have been handled, and re-sending it unchanged is safe (actors drop
envelopes they already handled). Any other exception is a bug or a protocol error: not retried.
"""
from __future__ import annotations

from typing import Protocol


class HostUnavailable(Exception):
    """The host is down, restarting, or gone; the message names it."""


class HostTransport(Protocol):
    async def call(self, host_id: str, payload: bytes) -> int: ...


class LocalTransport:
    """Hosts in this process, by id. For tests and the single-process benchmark."""

    def __init__(self) -> None:
        self.hosts: dict[str, object] = {}
        self.down: set[str] = set()

    async def call(self, host_id: str, payload: bytes) -> int:
        host = self.hosts.get(host_id)
        if host is None or host_id in self.down:
            raise HostUnavailable(f"host {host_id} is not reachable")
        return await host.deliver(payload)  # type: ignore[attr-defined]


class RayTransport:
    """Named Ray actors `host-N` in the peakdesk namespace. Ray restarts a killed host under the
    same name; a call that was in flight fails with an actor error and is re-sent by the
    channel, so no Ray-level task retries are used (they would re-run calls blindly)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, object] = {}

    def _handle(self, host_id: str):
        import ray

        h = self._handles.get(host_id)
        if h is None:
            try:
                h = ray.get_actor(host_id, namespace=self.namespace)
            except ValueError as exc:
                raise HostUnavailable(f"host {host_id} is not registered: {exc}") from exc
            self._handles[host_id] = h
        return h

    async def call(self, host_id: str, payload: bytes) -> int:
        import ray.exceptions as rex

        handle = self._handle(host_id)
        try:
            return await handle.deliver.remote(payload)
        except (rex.RayActorError, rex.ActorUnavailableError, rex.ActorUnschedulableError) as exc:
            # Unschedulable: its node is gone; the process that started peakdesk starts it again
            # elsewhere under the same name (actors/cluster.py) — until then, re-sent like any
            if isinstance(exc, (rex.ActorDiedError, rex.ActorUnschedulableError)):
                self._handles.pop(host_id, None)  # gone for good: look the name up again
            raise HostUnavailable(f"host {host_id}: {type(exc).__name__}") from exc
