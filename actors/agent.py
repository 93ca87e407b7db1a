"""AgentActor: one human agent of a merchant — status, capacity, the conversations held, the
console connections to tell about new ones.

The agent is the one authority on its own capacity: queues (one per group, and an agent may
serve several) *offer* conversations, and only the agent accepts them, one message at a time,
so two queues can never seat two conversations in its last free place (the Rocket.Chat
over-assignment under concurrent load). A declined offer goes back to its queue, in its place.
"""
from __future__ import annotations

from .base import Actor
from .envelope import ActorRef

AGENT_STATUSES = ("online", "busy", "away", "offline")
# An agent whose last console connection dropped stays as it was this long (a page reload, a
# network blip), then goes offline so queues stop offering it conversations.
OFFLINE_GRACE_S = 60.0
MAX_CONNECTIONS = 16


class AgentActor(Actor):
    kind = "agent"

    def initial_state(self) -> dict:
        return {"status": "offline", "capacity": 0, "groups": [], "skills": [], "sessions": [], "conns": []}

    # -- telling others ----------------------------------------------------------------------------
    def _view(self) -> dict:
        s = self.state
        return {"agent_id": self.ref.id, "status": s["status"], "capacity": s["capacity"],
                "load": len(s["sessions"]), "skills": s.get("skills", [])}

    def _announce(self, groups: list[str] | None = None) -> None:
        view = self._view()
        for group in groups if groups is not None else self.state["groups"]:
            self.send(ActorRef("queue", self.ref.merchant, group), "agent_status", view)

    def _tell_consoles(self, frame: dict) -> None:
        for connection in self.state.get("conns", []):
            self.push(connection, frame)

    def _status_frame(self) -> dict:
        s = self.state
        return {"t": "agent", "status": s["status"], "capacity": s["capacity"], "load": len(s["sessions"]),
                "sessions": list(s["sessions"]), "groups": list(s["groups"])}

    # -- status and connections --------------------------------------------------------------------
    def on_status(self, body: dict, env) -> None:
        status = body.get("status")
        if status not in AGENT_STATUSES:
            raise ValueError(f"agent status must be one of {AGENT_STATUSES}, got {status!r}")
        capacity = int(body.get("capacity", self.state["capacity"]))
        if capacity < 0:
            raise ValueError(f"agent capacity must be >= 0, got {capacity}")
        old_groups = list(self.state["groups"])
        self.state.update(status=status, capacity=capacity,
                          groups=[str(g) for g in body.get("groups", self.state["groups"])],
                          skills=[str(k) for k in body.get("skills", self.state.get("skills", []))])
        if body.get("connection"):
            self._add_connection(body["connection"])
        self.emit("agent.status", agent_id=self.ref.id, payload={"status": status, "capacity": capacity})
        gone = [g for g in old_groups if g not in self.state["groups"]]
        if gone:  # groups it left see it offline there
            view = {**self._view(), "status": "offline"}
            for group in gone:
                self.send(ActorRef("queue", self.ref.merchant, group), "agent_status", view)
        self._announce()
        self._tell_consoles(self._status_frame())

    def _add_connection(self, connection: str) -> None:
        conns = self.state.setdefault("conns", [])
        if connection not in conns:
            conns.append(connection)
            del conns[:-MAX_CONNECTIONS]
        self.cancel_timer("offline")

    def on_subscribe(self, body: dict, env) -> None:
        self._add_connection(body["connection"])
        self.push(body["connection"], self._status_frame())

    def on_unsubscribe(self, body: dict, env) -> None:
        conns = self.state.setdefault("conns", [])
        if body.get("connection") in conns:
            conns.remove(body["connection"])
        if not conns and self.state["status"] != "offline":
            self.set_timer("offline", OFFLINE_GRACE_S, "went_away")

    def on_went_away(self, body: dict, env) -> None:
        if self.state.get("conns") or self.state["status"] == "offline":
            return
        self.state["status"] = "offline"
        self.emit("agent.status", agent_id=self.ref.id, payload={"status": "offline", "reason": "disconnected"})
        self._announce()

    # -- conversations -----------------------------------------------------------------------------
    def _has_room(self) -> bool:
        s = self.state
        return s["status"] == "online" and len(s["sessions"]) < s["capacity"]

    def on_offer(self, body: dict, env) -> None:
        """A conversation for this agent. From a queue (`group`): accepted only online with room.
        Direct (a transfer, a reopened conversation, a supervisor taking over — `reply` is
        "session"): the same rule, unless `force` (a supervisor's own take-over)."""
        session = str(body["session"])
        s = self.state
        accept = session in s["sessions"] or bool(body.get("force")) or self._has_room()
        if accept and session not in s["sessions"]:
            s["sessions"].append(session)  # the consoles hear of it once the session confirms
        if body.get("reply") == "session":
            self.send(ActorRef("session", self.ref.merchant, session), "offer_result",
                      {"agent_id": self.ref.id, "accepted": accept, "via": body.get("via", "")})
        else:
            self.send(ActorRef("queue", self.ref.merchant, str(body["group"])), "offer_result",
                      {"session": session, "agent_id": self.ref.id, "accepted": accept})
            if accept:
                self.send(ActorRef("session", self.ref.merchant, session), "assign", {"agent_id": self.ref.id})
        self._announce()
        self._tell_consoles(self._status_frame())

    def on_confirmed(self, body: dict, env) -> None:
        """The session took this agent as its own: now the consoles may subscribe to it (told
        any earlier, a console's subscribe could reach the session before the assignment)."""
        if body["session"] in self.state["sessions"]:
            self._tell_consoles({"t": "assigned", "session": body["session"], "customer_id": body.get("customer_id", ""),
                                 "group": body.get("group", ""), "via": body.get("via", "queue")})

    def on_released(self, body: dict, env) -> None:
        if body["session"] in self.state["sessions"]:
            self.state["sessions"].remove(body["session"])
            self._tell_consoles({"t": "released", "session": body["session"], "reason": body.get("reason", "")})
            self._announce()
            self._tell_consoles(self._status_frame())

    def on_relay(self, body: dict, env) -> None:
        """A frame for this agent's consoles (agent-to-agent chat)."""
        self._tell_consoles(body["frame"])
