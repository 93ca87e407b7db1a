"""QueueActor: one group's waiting conversations and the agents that serve it. Lives on the
merchant's host with its agents. First come, first served onto the least-loaded online agent
with room; the routing issue brings the strategies, priorities and overflow."""
from __future__ import annotations

from .base import Actor
from .envelope import ActorRef


class QueueActor(Actor):
    kind = "queue"

    def initial_state(self) -> dict:
        return {"waiting": [], "agents": {}}

    def on_enqueue(self, body: dict, env) -> None:
        if body["session"] not in self.state["waiting"]:
            self.state["waiting"].append(body["session"])
            self.emit("queue.entered", session_id=body["session"], group_id=self.ref.id)
        self._assign()

    def on_dequeue(self, body: dict, env) -> None:
        if body["session"] in self.state["waiting"]:
            self.state["waiting"].remove(body["session"])

    def on_agent_status(self, body: dict, env) -> None:
        self.state["agents"][body["agent_id"]] = {
            "status": body["status"], "capacity": int(body["capacity"]), "load": int(body["load"])}
        self._assign()

    def _free_agent(self) -> str | None:
        free = [(a["load"] / a["capacity"], aid) for aid, a in self.state["agents"].items()
                if a["status"] == "online" and a["load"] < a["capacity"]]
        return min(free)[1] if free else None

    def _assign(self) -> None:
        while self.state["waiting"]:
            agent_id = self._free_agent()
            if agent_id is None:
                return
            session = self.state["waiting"].pop(0)
            self.state["agents"][agent_id]["load"] += 1
            self.send(ActorRef("session", self.ref.merchant, session), "assign", {"agent_id": agent_id})
