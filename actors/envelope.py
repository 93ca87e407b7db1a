"""Actor addresses and the envelopes that carry messages between them.

An envelope is delivered exactly once and in order per (origin -> actor): the origin numbers
its envelopes (`n`, strictly increasing), channels keep one batch in flight so order holds on
the wire, and each actor keeps a watermark per origin so a batch re-sent after a crash is
recognised and dropped (see actors/base.py `Actor.accepts`).

Wire format (msgpack), version 1: a batch is `[1, table_version, [env, ...]]` (optionally a
fourth element, the sending router's name), an envelope is
the array `[origin, n, kind, merchant, id, type, body, hops]` — positional, short, stable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

WIRE_VERSION = 1


class ProtocolError(ValueError):
    """A batch or envelope that does not follow the wire format; the message says what."""


@dataclass(frozen=True, slots=True)
class ActorRef:
    """An actor's address: its kind, its merchant (every actor belongs to one) and its id
    within that merchant. String form `kind:merchant:id`, e.g. `session:m1:8f3c`,
    `queue:m1:presales`."""

    kind: str
    merchant: str
    id: str

    def __post_init__(self) -> None:
        for name in ("kind", "merchant"):
            value = getattr(self, name)
            if not value or ":" in value:
                raise ProtocolError(f"actor ref {name} must be non-empty without ':', got {value!r}")
        if not self.id:
            raise ProtocolError("actor ref id must be non-empty")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.merchant}:{self.id}"

    @classmethod
    def parse(cls, key: str) -> "ActorRef":
        parts = key.split(":", 2)
        if len(parts) != 3:
            raise ProtocolError(f"actor key must be kind:merchant:id, got {key!r}")
        return cls(*parts)

    def __str__(self) -> str:
        return self.key


@dataclass(slots=True)
class Envelope:
    target: ActorRef
    type: str
    body: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    n: int = 0
    hops: int = 0

    def to_wire(self) -> list:
        t = self.target
        return [self.origin, self.n, t.kind, t.merchant, t.id, self.type, self.body, self.hops]

    @classmethod
    def from_wire(cls, w: Any) -> "Envelope":
        if not isinstance(w, (list, tuple)) or len(w) != 8:
            raise ProtocolError(f"envelope must be an array of 8, got {type(w).__name__}")
        origin, n, kind, merchant, id_, type_, body, hops = w
        if not isinstance(origin, str) or not isinstance(n, int) or not isinstance(type_, str):
            raise ProtocolError("envelope origin/n/type have wrong types")
        if not isinstance(body, dict):
            raise ProtocolError(f"envelope body must be a map, got {type(body).__name__}")
        return cls(ActorRef(kind, merchant, id_), type_, body, origin, n, hops)


def encode_batch(envelopes: list[Envelope], table_version: int = 0, sender: str = "") -> bytes:
    """`sender`: the calling router's name (a gateway's, so that the host can return frames
    for its connections with the acknowledgement); optional, a fourth element."""
    raw = [WIRE_VERSION, table_version, [e.to_wire() for e in envelopes]]
    return msgpack.packb(raw + [sender] if sender else raw)


def decode_batch(data: bytes) -> tuple[int, list[Envelope]]:
    """Returns (placement table version the sender used, envelopes)."""
    version, envs, _ = decode_batch_from(data)
    return version, envs


def decode_batch_from(data: bytes) -> tuple[int, list[Envelope], str]:
    """Returns (placement table version, envelopes, the sender's name or "")."""
    try:
        raw = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"batch is not valid msgpack: {exc}") from exc
    if not isinstance(raw, list) or len(raw) not in (3, 4) or raw[0] != WIRE_VERSION:
        raise ProtocolError(f"batch must be [{WIRE_VERSION}, version, envelopes(, sender)]")
    sender = raw[3] if len(raw) == 4 else ""
    if not isinstance(sender, str):
        raise ProtocolError(f"batch sender must be a string, got {type(sender).__name__}")
    return raw[1], [Envelope.from_wire(w) for w in raw[2]], sender
