"""SessionActor: one conversation — its participants' connections, its messages numbered by a
per-session sequence, its durable log (what reconnecting clients replay), its status. Its
lifecycle (queue, assignment, transfer, close, CSAT) is actors/session_lifecycle.py, the bot's
turns (answers, handover, agent assist) actors/session_bot.py.

Internal notes share the conversation's sequence (so agents resume them like messages) but
carry `internal: true`: they are pushed only to agents' connections, and the gateway never
replays them to a customer."""
from __future__ import annotations

from .base import Actor, Rejected
from .session_bot import BotTurns
from .session_lifecycle import LEADS, REOPEN_WITHIN_S, Lifecycle

STATUSES = ("new", "bot", "queued", "assigned", "offline", "closed")
MAX_REMEMBERED_CIDS = 512   # client message ids kept for dedupe: far more than a client has unacked
MAX_REMEMBERED_NOTICES = 64  # ticket notices (job ids) kept for dedupe
TICKETS = {"kind": "system", "id": "tickets"}
MAX_SUBSCRIBERS = 32        # connections watching one conversation (customer tabs, agent, supervisors)


class SessionActor(BotTurns, Lifecycle, Actor):
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
        try:
            self._check_access(body)
        except Rejected:
            if body.get("resync"):   # a renewal after a host restart (gateway/service.py): it lost access
                raise Rejected("no access to renew") from None   # meanwhile, nothing to tell the client
            raise
        who = body.get("from") or {}
        if who.get("kind") == "agent" and not body.get("resync"):   # a person opened this conversation
            # (who, when: the audit trail) — not a gateway renewing a subscription after a host restart
            self.emit("audit.conversation.viewed", payload={"actor": f"agent:{who.get('id', '')}",
                                                            "role": who.get("role", ""), "after": body.get("after", 0)},
                      **self._cols())
        if "after" in body:  # a client (re)joining: tell its gateway what to replay
            st = self.state
            self.push(body["connection"], {"t": "subscribed", "session": self.ref.id, "last_seq": st.get("seq", 0),
                                           "after": int(body["after"]), "status": st["status"],
                                           "agent_id": st["agent_id"], "position": st.get("position", 0),
                                           "eta_s": st.get("eta_s", 0),
                                           **({"entry": st["entry"]} if st.get("entry") and
                                              body.get("role", "customer") != "customer" else {})})
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

    def on_message(self, body: dict, env) -> None:
        self._check_access(body)
        connection = body.get("connection")
        cid = body.get("cid")
        cids = self.state.setdefault("cids", {})
        if cid is not None and cid in cids:  # the client re-sent it (lost ack): same answer
            if connection:
                self.push(connection, {"t": "ack", "cid": cid, "session": self.ref.id, "seq": cids[cid]})
            return
        if self.state["status"] == "closed":
            if not self._may_reopen(body):
                self._refuse({**body, "ref": cid}, "session_closed", f"session {self.ref.id} is closed")
            self._reopen()
        self.state["messages"] += 1
        record = {k: v for k, v in body.items() if k not in ("connection", "reply_to", "at_ms")}
        if self.state.get("outbound") and (body.get("from") or {}).get("kind") == "customer":
            out = self.state["outbound"]   # a channel's customer wrote: replies answer this message
            out["reply_to"] = body.get("reply_to") or out.get("reply_to") or {}
            out["last_inbound_ms"] = int(body.get("at_ms") or self.clock() * 1000)
        self._append(record, cid, connection)
        self._touch()
        if (body.get("from") or {}).get("kind") in ("customer", "visitor"):
            self._after_customer_message(record)

    def _may_reopen(self, body: dict) -> bool:
        who = body.get("from") or {}
        closed_at = self.state.get("closed_at") or 0
        return who.get("kind") in ("customer", "visitor") and self.clock() - closed_at <= REOPEN_WITHIN_S

    def _append(self, record: dict, cid, connection, internal: bool = False) -> int:
        """Number, log, acknowledge and broadcast one message (or internal note)."""
        seq = self.state["seq"] = self.state.get("seq", 0) + 1
        extra = {} if internal else self._response_time(record)
        event = self.emit("note.added" if internal else "message.sent", payload={**record, "seq": seq, **extra},
                          **self._cols())
        frame = {"t": "msg", "session": self.ref.id, "seq": seq, "ts": event.ts, **record}
        if internal:
            frame["internal"] = True
        self.append_log(seq, frame)
        if cid is not None:
            cids = self.state.setdefault("cids", {})
            cids[cid] = seq
            while len(cids) > MAX_REMEMBERED_CIDS:
                cids.pop(next(iter(cids)))
            if connection:
                self.push(connection, {"t": "ack", "cid": cid, "session": self.ref.id, "seq": seq})
        for sub, role in self.state.get("subs", {}).items():
            if sub != connection and not (internal and role == "customer"):
                self.push(sub, frame)
        if not internal:
            self._send_out(seq, record)
        return seq

    def _send_out(self, seq: int, record: dict) -> None:
        """A channel's conversation (WeChat, WhatsApp, mail...): what agents, the bot and ticket
        notices say goes out through the platform, as a job committed with the message."""
        out = self.state.get("outbound")
        if not out or (record.get("from") or {}).get("kind") not in ("agent", "bot", "system"):
            return
        self.enqueue("channel_send", lane=f"{self.ref.merchant}|{out['channel_id']}", channel_id=out["channel_id"],
                     session=self.ref.id, seq=seq, external_id=out["external_id"], thread=out.get("thread", ""),
                     reply_to=out.get("reply_to") or {}, last_inbound_ms=out.get("last_inbound_ms", 0),
                     message_kind=record.get("kind", "text"), content=record.get("content") or {})

    def on_delivery(self, body: dict, env) -> None:
        """What the platform did with a message sent out: sent, delivered, read — or failed, which
        the agents see at once (the customer did not get it)."""
        seq, status = int(body["seq"]), str(body["status"])
        self.emit(f"channel.{status if status in ('sent', 'delivered', 'read', 'failed') else 'delivery'}",
                  payload={"seq": seq, "status": status, "error": str(body.get("error") or ""),
                           "platform_id": str(body.get("platform_id") or "")}, **self._cols())
        frame = {"t": "delivery", "session": self.ref.id, "seq": seq, "status": status,
                 **({"error": str(body["error"])} if body.get("error") else {})}
        for sub, role in self.state.get("subs", {}).items():
            if role != "customer":
                self.push(sub, frame)

    def _response_time(self, record: dict) -> dict:
        """Response times for reports, measured where both messages pass: a customer message
        waiting for people starts the clock (kept running over more customer messages); the
        next agent message stops it and carries `response_ms` (and `first_response` for the
        conversation's first)."""
        s, kind = self.state, (record.get("from") or {}).get("kind")
        if kind in ("customer", "visitor") and s["status"] in ("queued", "assigned", "offline"):
            s.setdefault("awaiting", self.clock())
        elif kind == "agent" and s.get("awaiting") is not None:
            waited = int((self.clock() - s.pop("awaiting")) * 1000)
            first = not s.get("answered")
            s["answered"] = True
            return {"response_ms": waited, **({"first_response": True} if first else {})}
        return {}

    def on_note(self, body: dict, env) -> None:
        """An internal note: agents only, never shown to the customer."""
        who = body.get("from") or {}
        self._check_access(body)
        if who.get("kind") != "agent":
            self._refuse(body, "forbidden", "only agents write internal notes")
        cid = body.get("cid")
        cids = self.state.setdefault("cids", {})
        if cid is not None and cid in cids:
            if body.get("connection"):
                self.push(body["connection"], {"t": "ack", "cid": cid, "session": self.ref.id, "seq": cids[cid]})
            return
        self._append({"cid": cid, "kind": "note", "content": {"text": str(body["text"])}, "from": who},
                     cid, body.get("connection"), internal=True)

    def _add_note(self, who: dict, text: str) -> None:
        self._append({"kind": "note", "content": {"text": text}, "from": who}, None, None, internal=True)

    def on_ticket_notice(self, body: dict, env) -> None:
        """A ticket of this conversation moved on (storage/tickets): the customer reads it here.
        Sent at least once by the gateways' job runner; its job id makes a repeat a no-op."""
        seen = self.state.setdefault("notices", [])
        if body["job"] in seen:
            return
        seen.append(body["job"])
        del seen[:-MAX_REMEMBERED_NOTICES]
        self._append({"kind": "text", "content": {"text": str(body["text"]), "ticket": body["ticket"]},
                      "from": TICKETS}, None, None)

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
