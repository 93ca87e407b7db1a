"""SessionActor: one conversation. Here it holds the conversation's state and its per-session
sequence; the routing issue gives it the full lifecycle (bot, queue, assignment, CSAT)."""
from __future__ import annotations

from .base import Actor
from .envelope import ActorRef

STATUSES = ("new", "queued", "assigned", "closed")


class SessionActor(Actor):
    kind = "session"

    def initial_state(self) -> dict:
        return {"status": "new", "customer_id": "", "channel": "", "group": "", "agent_id": "", "messages": 0}

    def _cols(self) -> dict:
        s = self.state
        return {"session_id": self.ref.id, "channel": s["channel"], "customer_id": s["customer_id"],
                "group_id": s["group"], "agent_id": s["agent_id"]}

    def on_open(self, body: dict, env) -> None:
        if self.state["status"] != "new":
            return  # a second open of the same conversation changes nothing
        self.state.update(customer_id=str(body.get("customer_id", "")), channel=str(body.get("channel", "web")),
                          group=str(body.get("group", "default")), status="queued")
        self.emit("session.created", **self._cols())
        self.send(ActorRef("queue", self.ref.merchant, self.state["group"]), "enqueue", {"session": self.ref.id})

    def on_message(self, body: dict, env) -> None:
        if self.state["status"] == "closed":
            raise ValueError(f"session {self.ref.id} is closed")
        self.state["messages"] += 1
        self.emit("message.sent", payload=body, **self._cols())

    def on_assign(self, body: dict, env) -> None:
        if self.state["status"] != "queued":
            return
        self.state.update(status="assigned", agent_id=str(body["agent_id"]))
        self.emit("session.assigned", **self._cols())
        self.send(ActorRef("agent", self.ref.merchant, self.state["agent_id"]), "assigned", {"session": self.ref.id})

    def on_close(self, body: dict, env) -> None:
        if self.state["status"] == "closed":
            return
        previous, self.state["status"] = self.state["status"], "closed"
        self.emit("session.closed", payload={"by": body.get("by", "system")}, **self._cols())
        if previous == "queued":
            self.send(ActorRef("queue", self.ref.merchant, self.state["group"]), "dequeue", {"session": self.ref.id})
        elif previous == "assigned":
            self.send(ActorRef("agent", self.ref.merchant, self.state["agent_id"]), "released", {"session": self.ref.id})
