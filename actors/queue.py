"""QueueActor: one group's waiting conversations and its view of the agents who serve it.

One mailbox decides the group's assignments one at a time, whenever something changes — an
arrival, an agent coming online or freeing capacity, a declined offer — so nothing waits for a
timer (Chatwoot's queued conversations waited for a 15-minute job, chatwoot#10583). The rules
are the pure functions of actors/routing.py. The queue *offers* a conversation to the agent it
picked; the agent actor, the one authority on its capacity, accepts or declines, and a declined
conversation returns to its place in the queue. Offers in flight count as load, so the queue
never offers an agent more than its free places.

Waiting customers are told their position and an estimated wait, at most once per
POSITION_EVERY_S and only when it changed.
"""
from __future__ import annotations

from .base import Actor, Rejected
from .envelope import ActorRef
from .routing import STRATEGIES, AgentSlot, Overflow, RoundRobin, Waiting, assign

POSITION_EVERY_S = 1.0
DEFAULT_HANDLE_S = 180.0     # estimated handle time before the group has closed a conversation
HANDLE_WEIGHT = 0.1          # EWMA weight of each new handle time: ~the last 10-20 conversations
DAY_S = 86400


class QueueActor(Actor):
    kind = "queue"

    def initial_state(self) -> dict:
        return {"waiting": [], "offered": {}, "agents": {}, "routing": {"strategy": "least_load"},
                "rr_last": None, "arrivals": 0, "handle_s": DEFAULT_HANDLE_S}

    # -- configuration and agents ------------------------------------------------------------------
    def _configure(self, routing: dict) -> None:
        strategy = routing.get("strategy", "least_load")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.state["routing"] = dict(routing)

    def on_configure(self, body: dict, env) -> None:
        self._configure(body.get("routing", {}))
        self._assign()

    def on_agent_status(self, body: dict, env) -> None:
        self.state["agents"][str(body["agent_id"])] = {
            "status": body["status"], "capacity": int(body["capacity"]), "load": int(body["load"]),
            "skills": sorted(body.get("skills", []))}
        self._assign()

    # -- the queue ---------------------------------------------------------------------------------
    def on_enqueue(self, body: dict, env) -> None:
        session = str(body["session"])
        if "routing" in body:
            self._configure(body["routing"])
        if session in self.state["offered"] or any(w["session"] == session for w in self.state["waiting"]):
            return
        if not body.get("overflowed") and self._overflowing():
            target = self.state["routing"]["overflow_group"]
            self.emit("queue.overflowed", session_id=session, group_id=self.ref.id, payload={"to": target})
            self.send(ActorRef("session", self.ref.merchant, session), "moved", {"group": target, "reason": "overflow"})
            return
        self.state["arrivals"] += 1
        entry = {"session": session, "customer": str(body.get("customer_id", "")),
                 "priority": int(body.get("priority", 0)), "arrival": self.state["arrivals"],
                 "skills": sorted(set(body.get("skills", [])) | set(self.state["routing"].get("required_skills", []))),
                 "preferred": self._preferred(body), "since": self.clock(), "pos": 0,
                 "flag": str(body.get("flag") or "")}
        self.state["waiting"].append(entry)
        self.emit("queue.entered", session_id=session, group_id=self.ref.id,
                  payload={"priority": entry["priority"], "waiting": len(self.state["waiting"]),
                           **({"flag": entry["flag"]} if entry["flag"] else {})})
        self._assign()

    def _preferred(self, body: dict) -> str | None:
        """The agent who served this customer last, if within the group's returning window."""
        agent, at = body.get("last_agent"), body.get("last_served_at")
        days = int(self.state["routing"].get("returning_within_days", 7))
        if agent and at is not None and self.clock() - float(at) <= days * DAY_S:
            return str(agent)
        return None

    def _overflowing(self) -> bool:
        r = self.state["routing"]
        waiting = self.state["waiting"]
        oldest = self.clock() - min((w["since"] for w in waiting), default=self.clock())
        return Overflow(r.get("overflow_group"), int(r.get("overflow_max_waiting", 0)),
                        float(r.get("overflow_after_s", 0))).active(len(waiting), oldest)

    def on_dequeue(self, body: dict, env) -> None:
        self.state["waiting"] = [w for w in self.state["waiting"] if w["session"] != body["session"]]
        self._positions_changed()

    def on_pick(self, body: dict, env) -> None:
        """Manual assignment: an agent takes a waiting conversation from the queue."""
        entry = next((w for w in self.state["waiting"] if w["session"] == body["session"]), None)
        if entry is None:
            raise Rejected("not waiting", (body.get("connection", ""), {
                "t": "error", "code": "unknown_session", "ref": body["session"], "session": body["session"],
                "message": f"no conversation {body['session']} waiting in {self.ref.id}"}))
        self._offer(entry, str(body["agent_id"]))

    def on_offer_result(self, body: dict, env) -> None:
        entry = self.state["offered"].pop(str(body["session"]), None)
        if entry is None:
            return
        if body.get("accepted"):
            self.emit("queue.left", session_id=entry["session"], group_id=self.ref.id, agent_id=str(body["agent_id"]),
                      payload={"wait_ms": int((self.clock() - entry["since"]) * 1000)})
        else:  # back in its place: its arrival number keeps it ahead of later ones
            entry.pop("agent", None)
            self.state["waiting"].append(entry)
        self._assign()

    def on_handled(self, body: dict, env) -> None:
        """A conversation of this group closed after `handle_s` with an agent: the estimate learns."""
        h = float(body.get("handle_s", 0))
        if h > 0:
            self.state["handle_s"] += HANDLE_WEIGHT * (h - self.state["handle_s"])

    # -- assignment --------------------------------------------------------------------------------
    def _slots(self) -> dict[str, AgentSlot]:
        offered: dict[str, int] = {}
        for entry in self.state["offered"].values():
            offered[entry["agent"]] = offered.get(entry["agent"], 0) + 1
        return {aid: AgentSlot(aid, a["status"], a["capacity"], a["load"] + offered.get(aid, 0),
                               frozenset(a.get("skills", ())))
                for aid, a in self.state["agents"].items()}

    def _assign(self) -> None:
        s = self.state
        slots = self._slots()
        if not s["waiting"] or not any(a.status == "online" and a.load < a.capacity for a in slots.values()):
            self._positions_changed()
            return  # the usual state at a peak: every place taken; nothing to sort
        by_id = {w["session"]: w for w in s["waiting"]}
        waiting = [Waiting(w["session"], w["priority"], w["arrival"], frozenset(w["skills"]), w["preferred"])
                   for w in s["waiting"]]
        rr = RoundRobin(s["rr_last"])
        done = assign(s["routing"].get("strategy", "least_load"), slots, waiting, rr)
        s["rr_last"] = rr.last
        for session, agent_id in done:
            self._offer(by_id[session], agent_id)
        self._positions_changed()

    def _offer(self, entry: dict, agent_id: str) -> None:
        s = self.state
        s["waiting"] = [w for w in s["waiting"] if w["session"] != entry["session"]]
        s["offered"][entry["session"]] = {**entry, "agent": agent_id}
        self.send(ActorRef("agent", self.ref.merchant, agent_id), "offer",
                  {"session": entry["session"], "group": self.ref.id, "customer_id": entry["customer"]})

    # -- telling the waiting -----------------------------------------------------------------------
    def _positions_changed(self) -> None:
        if self.state["waiting"] and "positions" not in self.meta["t"]:
            self.set_timer("positions", POSITION_EVERY_S, "tell_positions")

    def on_tell_positions(self, body: dict, env) -> None:
        s = self.state
        seats = sum(a["capacity"] for a in s["agents"].values() if a["status"] == "online") or 1
        order = sorted(s["waiting"], key=lambda w: (-w["priority"], w["arrival"]))
        for i, w in enumerate(order, start=1):
            if w.get("pos") != i:
                w["pos"] = i
                eta = int(i * s["handle_s"] / seats)
                self.send(ActorRef("session", self.ref.merchant, w["session"]), "position",
                          {"position": i, "eta_s": eta, "waiting": len(order)})

    def statistics(self) -> dict:
        s = self.state
        now = self.clock()
        return {"waiting": len(s["waiting"]), "offered": len(s["offered"]),
                "longest_wait_s": max((now - w["since"] for w in s["waiting"]), default=0.0),
                "agents_online": sum(1 for a in s["agents"].values() if a["status"] == "online")}
