"""A conversation's lifecycle, the half of SessionActor that routing drives:

    new -> queued -> assigned -> closed          (closed by agent, customer or idle timeout)
    new -> offline                               (outside business hours: a left message)
    new -> bot -> queued | offline               (the merchant's bot first: actors/session_bot.py)
    closed -> queued | assigned | bot            (the customer writes again: reopened)

Every transition is an event. Queues offer conversations to agents; agents accept and tell
the session (`assign`). Direct offers — a transfer to an agent, a supervisor's take-over, a
reopened conversation going back to its agent — go from the session to the agent, who answers
the session (`offer_result`).
"""
from __future__ import annotations

from .base import Rejected
from .envelope import ActorRef

LEADS = ("owner", "admin", "supervisor")  # see and steer every conversation of their merchant
IDLE_CLOSE_S = 30 * 60       # a conversation nobody wrote in for this long closes ("idle")
REOPEN_WITHIN_S = 60 * 60    # a customer writing this soon after closing reopens it


class Lifecycle:
    """Mixed into SessionActor; uses its state, `emit`, `send`, `push`, `_broadcast`, `_cols`."""

    # -- helpers -----------------------------------------------------------------------------------
    def _refuse(self, body: dict, code: str, message: str) -> None:
        raise Rejected(message, (body.get("connection", ""), {
            "t": "error", "code": code, "ref": body.get("ref") or self.ref.id, "session": self.ref.id,
            "message": message}))

    def _queue(self, group: str | None = None) -> ActorRef:
        return ActorRef("queue", self.ref.merchant, group or self.state["group"])

    def _agent(self, agent_id: str) -> ActorRef:
        return ActorRef("agent", self.ref.merchant, agent_id)

    def _customer(self) -> ActorRef:
        return ActorRef("customer", self.ref.merchant, self.state["customer_id"] or self.ref.id)

    def _event_frame(self, event: str, **fields) -> None:
        self._broadcast({"t": "event", "session": self.ref.id, "event": event, **fields})

    def _touch(self) -> None:
        """Restart the idle clock (any message, any assignment)."""
        if self.state["status"] in ("bot", "queued", "assigned", "offline"):
            self.set_timer("idle", float(self.state.get("idle_close_s", IDLE_CLOSE_S)), "idle_timeout")

    # -- arrival -----------------------------------------------------------------------------------
    def on_open(self, body: dict, env) -> None:
        s = self.state
        if s["status"] != "new":
            who = body.get("from")
            if who is not None and who.get("id") != s["customer_id"]:
                self._refuse(body, "forbidden", "session id in use")
            return  # a second open of the same conversation changes nothing
        if body.get("connection"):
            s.setdefault("subs", {})[body["connection"]] = "customer"
        s.update(customer_id=str(body.get("customer_id", "")), channel=str(body.get("channel", "web")),
                 group=str(body.get("group") or "default"), priority=int(body.get("priority", 0)),
                 skills=[str(k) for k in body.get("skills", [])], routing=body.get("routing"),
                 idle_close_s=float(body.get("idle_close_s", IDLE_CLOSE_S)), created_at=self.clock(),
                 assist=bool(body.get("assist") or body.get("bot")),  # the merchant has a knowledge base
                 entry=dict(body.get("entry") or {}),   # the page it started on (its product): the agent's panel
                 outbound=dict(body.get("outbound") or {}))   # a channel's conversation: where answers go out
        payload = {k: body[k] for k in ("entry", "issue_type", "rule") if body.get(k)}
        if body.get("bot"):
            self._bot_open(body)
            return
        if body.get("outside_hours"):
            s["status"] = "offline"
            self.emit("session.created", payload={**payload, "outside_hours": True}, **self._cols())
            self._event_frame("outside_hours", message=str(body.get("outside_message", "")))
            return
        s["status"] = "queued"
        self.emit("session.created", payload={**payload, "priority": s["priority"]}, **self._cols())
        self.send(self._customer(), "arrive", {"session": self.ref.id})
        self._touch()

    def on_customer_info(self, body: dict, env) -> None:
        if self.state["status"] == "queued" and not self.state.get("enqueued"):
            self.state["known"] = {k: body.get(k) for k in ("last_agent", "last_served_at", "conversations")}
            self._enqueue()

    def _enqueue(self, overflowed: bool = False) -> None:
        s = self.state
        s.update(enqueued=True, queued_at=self.clock(), agent_id="")
        body = {"session": self.ref.id, "customer_id": s["customer_id"], "priority": s.get("priority", 0),
                "skills": s.get("skills", []), "overflowed": overflowed, "flag": s.get("flag", ""),
                **(s.get("known") or {})}
        if s.get("routing") is not None and not overflowed:
            body["routing"] = s["routing"]
        self.send(self._queue(), "enqueue", body)

    def on_moved(self, body: dict, env) -> None:
        """The queue overflowed: wait in `group` instead."""
        if self.state["status"] != "queued":
            return
        old, self.state["group"] = self.state["group"], str(body["group"])
        self.emit("session.moved", payload={"from": old, "to": self.state["group"], "reason": body.get("reason", "")},
                  **self._cols())
        self._enqueue(overflowed=True)

    def on_position(self, body: dict, env) -> None:
        if self.state["status"] != "queued":
            return
        self.state.update(position=int(body["position"]), eta_s=int(body["eta_s"]))
        frame = {"t": "queue", "session": self.ref.id, "position": self.state["position"],
                 "eta_s": self.state["eta_s"], "waiting": int(body.get("waiting", 0))}
        for connection, role in self.state.get("subs", {}).items():
            if role == "customer":
                self.push(connection, frame)

    # -- assignment --------------------------------------------------------------------------------
    def on_assign(self, body: dict, env) -> None:
        agent_id = str(body["agent_id"])
        if self.state["status"] != "queued":  # closed or moved meanwhile: give the seat back
            if agent_id != self.state["agent_id"]:
                self.send(self._agent(agent_id), "released", {"session": self.ref.id, "reason": "stale"})
            return
        self._assigned(agent_id, "session.assigned", via="queue")

    def _assigned(self, agent_id: str, event: str, via: str = "queue", **payload) -> None:
        s = self.state
        wait_ms = int((self.clock() - s.get("queued_at", self.clock())) * 1000)
        s.update(status="assigned", agent_id=agent_id, assigned_at=self.clock(), enqueued=False, position=0)
        self.emit(event, payload={"wait_ms": wait_ms, **payload}, **self._cols())
        self.send(self._customer(), "served", {"agent_id": agent_id, "at": self.clock()})
        self._event_frame(event, agent_id=agent_id)
        self.send(self._agent(agent_id), "confirmed", {"session": self.ref.id, "customer_id": s["customer_id"],
                                                       "group": s["group"], "via": via})
        self._touch()

    def on_offer_result(self, body: dict, env) -> None:
        """The answer to a direct offer (transfer, take-over, reopen)."""
        s, via, agent_id = self.state, body.get("via"), str(body["agent_id"])
        pending = s.pop("pending", None)
        if not body.get("accepted"):
            if via == "reopen" and s["status"] == "queued":
                self._enqueue()
            elif pending and pending.get("connection"):
                self.push(pending["connection"], {"t": "error", "code": "agent_unavailable", "session": self.ref.id,
                                                  "message": f"agent {agent_id} is not online with a free place"})
            return
        if via == "reopen" and s["status"] == "queued":
            self._assigned(agent_id, "session.assigned", via="reopen", reopened=True)
        elif via in ("transfer", "takeover") and s["status"] in ("assigned", "queued") and pending:
            previous = s["agent_id"]
            if previous and previous != agent_id:
                self.send(self._agent(previous), "released", {"session": self.ref.id, "reason": via})
            if s["status"] == "queued":
                self.send(self._queue(), "dequeue", {"session": self.ref.id})
            self._assigned(agent_id, "session.transferred" if via == "transfer" else "session.taken_over", via=via,
                           from_agent=previous, by=pending.get("by", ""), note=pending.get("note", ""))
        elif s["status"] == "closed" or s["agent_id"] != agent_id:
            self.send(self._agent(agent_id), "released", {"session": self.ref.id, "reason": "stale"})

    # -- collaboration -----------------------------------------------------------------------------
    def on_transfer(self, body: dict, env) -> None:
        """To another agent (who must be online with room) or to a group's queue, with a note."""
        who = self._check_steer(body)
        s = self.state
        if s["status"] not in ("assigned", "queued"):
            self._refuse(body, "invalid_state", f"session {self.ref.id} is {s['status']}; only open ones transfer")
        note = str(body.get("note", ""))
        if body.get("to_agent"):
            s["pending"] = {"by": who.get("id", ""), "note": note, "connection": body.get("connection", "")}
            self.send(self._agent(str(body["to_agent"])), "offer",
                      {"session": self.ref.id, "customer_id": s["customer_id"], "reply": "session", "via": "transfer"})
        else:
            previous, group = s["agent_id"], str(body["to_group"])
            if s["status"] == "assigned":
                self.send(self._agent(previous), "released", {"session": self.ref.id, "reason": "transfer"})
            else:
                self.send(self._queue(), "dequeue", {"session": self.ref.id})
            s.update(status="queued", group=group, routing=None)
            self.emit("session.transferred", payload={"from_agent": previous, "to_group": group, "by": who.get("id", ""),
                                                      "note": note}, **self._cols())
            self._event_frame("session.transferred", to_group=group)
            self._enqueue()
        if note:
            self._add_note(who, note)

    def on_takeover(self, body: dict, env) -> None:
        """A supervisor takes the conversation over: it becomes theirs whatever their load."""
        who = self._check_steer(body, leads_only=True)
        if self.state["status"] not in ("assigned", "queued"):
            self._refuse(body, "invalid_state", f"session {self.ref.id} is {self.state['status']}")
        self.state["pending"] = {"by": who.get("id", ""), "connection": body.get("connection", "")}
        self.send(self._agent(who["id"]), "offer", {"session": self.ref.id, "customer_id": self.state["customer_id"],
                                                    "reply": "session", "via": "takeover", "force": True})

    def _check_steer(self, body: dict, leads_only: bool = False) -> dict:
        who = body.get("from") or {}
        self._check_access(body)
        is_lead = who.get("kind") == "agent" and who.get("role") in LEADS
        is_own = who.get("kind") == "agent" and who.get("id") == self.state["agent_id"]
        if not (is_lead or (is_own and not leads_only)):
            self._refuse(body, "forbidden", "only the conversation's agent or a supervisor may do that")
        return who

    # -- the end -----------------------------------------------------------------------------------
    def on_close(self, body: dict, env) -> None:
        if body.get("from") is not None:
            self._check_access(body)
        if self.state["status"] == "closed":
            return
        who = body.get("from") or {}
        by = body.get("by") or ("customer" if who.get("kind") in ("customer", "visitor") else
                                "agent" if who else "system")
        self._close(by)

    def on_idle_timeout(self, body: dict, env) -> None:
        if self.state["status"] not in ("closed", "new"):
            self._close("idle")

    def _close(self, by: str) -> None:
        s = self.state
        previous = s["status"]
        handle_s = self.clock() - s["assigned_at"] if previous == "assigned" and s.get("assigned_at") else 0.0
        s.update(status="closed", closed_at=self.clock(), enqueued=False, position=0, closed_from=previous)
        self.cancel_timer("idle")
        self.cancel_timer("bot")
        waited = {"wait_ms": int((self.clock() - s.get("queued_at", self.clock())) * 1000)} if previous == "queued" else {}
        s.pop("awaiting", None)
        self.emit("session.closed", payload={"by": by, "from_status": previous, "handle_s": round(handle_s, 3),
                                             **waited}, **self._cols())  # wait_ms: how long an abandoning customer waited
        self._event_frame("session.closed", by=by)
        if previous == "queued":
            self.send(self._queue(), "dequeue", {"session": self.ref.id})
        elif previous == "assigned":
            self.send(self._agent(s["agent_id"]), "released", {"session": self.ref.id, "reason": "closed"})
            self.send(self._queue(), "handled", {"handle_s": handle_s})
        if previous in ("bot", "queued", "assigned") and s.get("csat") is None:
            self.emit("csat.invited", payload={}, **self._cols())
            self._event_frame("csat.invite")

    def on_csat(self, body: dict, env) -> None:
        who = body.get("from") or {}
        self._check_access(body)
        s = self.state
        if who.get("kind") not in ("customer", "visitor"):
            self._refuse(body, "forbidden", "only the customer rates a conversation")
        if s["status"] != "closed" or s.get("csat") is not None:
            self._refuse(body, "invalid_state", "a conversation is rated once, after it closed")
        score = int(body["score"])
        s["csat"] = score
        self.emit("csat.rated", payload={"score": score, "comment": str(body.get("comment", ""))}, **self._cols())
        self._event_frame("csat.rated", score=score)

    def _reopen(self) -> None:
        """The customer wrote again soon after closing: back to the same agent if they are online
        with room (the agent decides), otherwise to the queue."""
        s = self.state
        previous_agent = s["agent_id"]
        back_to_bot = s.get("closed_from") == "bot"
        s.update(status="bot" if back_to_bot else "queued", queued_at=self.clock(), csat=None)
        self.emit("session.reopened", payload={"previous_agent": previous_agent, "bot": back_to_bot}, **self._cols())
        self._event_frame("session.reopened")
        if back_to_bot:  # the message that reopened it goes to the bot (SessionActor.on_message)
            self.state["bot"]["req"] = 0
        elif previous_agent:
            self.send(self._agent(previous_agent), "offer", {"session": self.ref.id, "customer_id": s["customer_id"],
                                                             "reply": "session", "via": "reopen"})
        else:
            self._enqueue()
        self._touch()
