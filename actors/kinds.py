"""The actor kinds a host can activate, by kind name."""
from __future__ import annotations

from .agent import AgentActor
from .base import Actor
from .customer import CustomerActor
from .echo import EchoActor
from .queue import QueueActor
from .room import RoomActor
from .session import SessionActor

KINDS: dict[str, type[Actor]] = {k.kind: k for k in (SessionActor, AgentActor, QueueActor, CustomerActor, RoomActor, EchoActor)}
