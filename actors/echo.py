"""EchoActor: the baseline for benchmarks (`peakdesk bench --baseline echo`). It does the
least an actor can: counts what it receives and, for `relay`, passes the message back to its
peer until the hop budget is spent — the runtime's own cost, without business logic."""
from __future__ import annotations

from .base import Actor
from .envelope import ActorRef


class EchoActor(Actor):
    kind = "echo"

    def initial_state(self) -> dict:
        return {"received": 0}

    def on_ping(self, body: dict, env) -> None:
        self.state["received"] += 1
        if body.get("event"):
            self.emit("echo.ping", payload=body)

    def on_relay(self, body: dict, env) -> None:
        self.state["received"] += 1
        left = int(body["left"])
        if left > 0:
            self.send(ActorRef("echo", self.ref.merchant, body["peer"]), "relay",
                      {"peer": self.ref.id, "left": left - 1})
