"""SessionActor: one conversation — its participants' connections, its messages numbered by a
per-session sequence, its durable log (what reconnecting clients replay), its status. The
routing issue gives it the full lifecycle (bot, queue, assignment, CSAT)."""
from __future__ import annotations

from .base import Actor, Rejected
from .envelope import ActorRef

LEADS = ("owner", "admin", "supervisor")  # see every conversation of their merchant

STATUSES = ("new", "queued", "assigned", "closed")
MAX_REMEMBERED_CIDS = 512   # client message ids kept for dedupe: far more than a client has unacked
MAX_SUBSCRIBERS = 32        # connections watching one conversation (customer tabs, agent, supervisors)


class SessionActor(Actor):
    kind = "session"

    def initial_state(self) -> dict:
        return {"status": "new", "customer_id": "", "channel": "", "group": "", "agent_id": "", "messages": 0,
                "seq": 0, "cids": {}, "subs": {}}

    def _cols(self) -> dict:
        s = self.state
        return {"session_id": self.ref.id, "channel": s["channel"], "customer_id": s["customer_id"],
                "group_id": s["group"], "agent_id": s["agent_id"]}

    # -- access ------------------------------------------------------------------------------------
    def _check_access(self, body: dict) -> None:
        """Messages from clients carry `from` (the gateway's authenticated principal): only the
        conversation's customer, its assigned agent, and supervisors and up may touch it. Refusal
        looks the same whether the session is unknown or someone else's."""
        who = body.get("from")
        if who is None:
            return  # from inside the cluster (other actors, tests of the runtime)
        s = self.state
        ok = s["status"] != "new" and (
            (who.get("kind") in ("customer", "visitor") and who.get("id") == s["customer_id"])
            or (who.get("kind") == "agent" and (who.get("id") == s["agent_id"] or who.get("role") in LEADS)))
        if not ok:
            ref = body.get("cid") or self.ref.id
            raise Rejected("no access", (body.get("connection", ""), {
                "t": "error", "code": "unknown_session", "ref": ref, "session": self.ref.id,
                "message": f"no session {self.ref.id} of yours"}))

    # -- connections ---------------------------------------------------------------------------
    def on_subscribe(self, body: dict, env) -> None:
        self._check_access(body)
        if "after" in body:  # a client (re)joining: tell its gateway what to replay
            self.push(body["connection"], {"t": "subscribed", "session": self.ref.id,
                                           "last_seq": self.state.get("seq", 0), "after": int(body["after"])})
        subs = self.state.setdefault("subs", {})
        subs.pop(body["connection"], None)
        subs[body["connection"]] = body.get("role", "customer")
        while len(subs) > MAX_SUBSCRIBERS:
            subs.pop(next(iter(subs)))

    def on_unsubscribe(self, body: dict, env) -> None:
        self.state.setdefault("subs", {}).pop(body["connection"], None)

    def _broadcast(self, frame: dict, skip: str | None = None) -> None:
        for connection in self.state.get("subs", {}):
            if connection != skip:
                self.push(connection, frame)

    # -- lifecycle -----------------------------------------------------------------------------
    def on_open(self, body: dict, env) -> None:
        if self.state["status"] != "new":
            who = body.get("from")
            if who is not None and who.get("id") != self.state["customer_id"]:
                raise Rejected("session id taken", (body.get("connection", ""), {
                    "t": "error", "code": "forbidden", "ref": body.get("id"), "message": "session id in use"}))
            return  # a second open of the same conversation changes nothing
        if body.get("connection"):
            self.state.setdefault("subs", {})[body["connection"]] = "customer"
        self.state.update(customer_id=str(body.get("customer_id", "")), channel=str(body.get("channel", "web")),
                          group=str(body.get("group", "default")), status="queued")
        self.emit("session.created", payload={k: body[k] for k in ("entry", "issue_type") if k in body}, **self._cols())
        self.send(ActorRef("queue", self.ref.merchant, self.state["group"]), "enqueue", {"session": self.ref.id})

    def on_message(self, body: dict, env) -> None:
        self._check_access(body)
        connection = body.get("connection")
        if self.state["status"] == "closed":
            if connection:
                self.push(connection, {"t": "error", "code": "session_closed", "cid": body.get("cid"),
                                       "message": f"session {self.ref.id} is closed"})
            raise ValueError(f"session {self.ref.id} is closed")
        cid = body.get("cid")
        cids = self.state.setdefault("cids", {})
        if cid is not None and cid in cids:  # the client re-sent it (lost ack): same answer
            if connection:
                self.push(connection, {"t": "ack", "cid": cid, "session": self.ref.id, "seq": cids[cid]})
            return
        self.state["messages"] += 1
        seq = self.state["seq"] = self.state.get("seq", 0) + 1
        record = {k: v for k, v in body.items() if k != "connection"}
        event = self.emit("message.sent", payload={**record, "seq": seq}, **self._cols())
        frame = {"t": "msg", "session": self.ref.id, "seq": seq, "ts": event.ts, **record}
        self.append_log(seq, frame)
        if cid is not None:
            cids[cid] = seq
            while len(cids) > MAX_REMEMBERED_CIDS:
                cids.pop(next(iter(cids)))
            if connection:
                self.push(connection, {"t": "ack", "cid": cid, "session": self.ref.id, "seq": seq})
        self._broadcast(frame, skip=connection)

    def on_typing(self, body: dict, env) -> None:
        self._check_access(body)
        self._broadcast({"t": "typing", "session": self.ref.id, "from": body.get("from"), "on": bool(body.get("on"))},
                        skip=body.get("connection"))

    def on_read(self, body: dict, env) -> None:
        self._check_access(body)
        seq = int(body["seq"])
        if not 0 < seq <= self.state.get("seq", 0):
            raise Rejected("bad read receipt", (body.get("connection", ""), {
                "t": "error", "code": "invalid_frame", "ref": self.ref.id,
                "message": f"seq: {seq} is not a message of session {self.ref.id} (1..{self.state.get('seq', 0)})"}))
        who = body.get("from") or {}
        self.emit("message.read", payload={"seq": seq, "from": who}, **self._cols())
        self._broadcast({"t": "read", "session": self.ref.id, "seq": seq, "from": who}, skip=body.get("connection"))

    def on_assign(self, body: dict, env) -> None:
        if self.state["status"] != "queued":
            return
        self.state.update(status="assigned", agent_id=str(body["agent_id"]))
        self.emit("session.assigned", **self._cols())
        self.send(ActorRef("agent", self.ref.merchant, self.state["agent_id"]), "assigned", {"session": self.ref.id})
        self._broadcast({"t": "event", "session": self.ref.id, "event": "session.assigned",
                         "agent_id": self.state["agent_id"]})

    def on_close(self, body: dict, env) -> None:
        if self.state["status"] == "closed":
            return
        previous, self.state["status"] = self.state["status"], "closed"
        self.emit("session.closed", payload={"by": body.get("by", "system")}, **self._cols())
        self._broadcast({"t": "event", "session": self.ref.id, "event": "session.closed", "by": body.get("by", "system")})
        if previous == "queued":
            self.send(ActorRef("queue", self.ref.merchant, self.state["group"]), "dequeue", {"session": self.ref.id})
        elif previous == "assigned":
            self.send(ActorRef("agent", self.ref.merchant, self.state["agent_id"]), "released", {"session": self.ref.id})
