"""AgentActor: one human agent of a merchant — status, capacity, the conversations held."""
from __future__ import annotations

from .base import Actor
from .envelope import ActorRef

AGENT_STATUSES = ("online", "busy", "away", "offline")


class AgentActor(Actor):
    kind = "agent"

    def initial_state(self) -> dict:
        return {"status": "offline", "capacity": 0, "groups": [], "sessions": []}

    def _announce(self) -> None:
        s = self.state
        for group in s["groups"]:
            self.send(ActorRef("queue", self.ref.merchant, group), "agent_status",
                      {"agent_id": self.ref.id, "status": s["status"], "capacity": s["capacity"],
                       "load": len(s["sessions"])})

    def on_status(self, body: dict, env) -> None:
        status = body.get("status")
        if status not in AGENT_STATUSES:
            raise ValueError(f"agent status must be one of {AGENT_STATUSES}, got {status!r}")
        capacity = int(body.get("capacity", self.state["capacity"]))
        if capacity < 0:
            raise ValueError(f"agent capacity must be >= 0, got {capacity}")
        self.state.update(status=status, capacity=capacity,
                          groups=[str(g) for g in body.get("groups", self.state["groups"])])
        self.emit("agent.status", agent_id=self.ref.id, payload={"status": status, "capacity": capacity})
        self._announce()

    def on_assigned(self, body: dict, env) -> None:
        if body["session"] not in self.state["sessions"]:
            self.state["sessions"].append(body["session"])

    def on_released(self, body: dict, env) -> None:
        if body["session"] in self.state["sessions"]:
            self.state["sessions"].remove(body["session"])
            self._announce()
