"""The bot's part of a conversation (mixed into SessionActor):

    new -> bot -> queued            (the bot hands over: asked for a person, angry, no answer)
    new -> bot -> offline           (the same outside business hours: a left message)

While `bot`, every customer message is asked of the bot pool (actors/bot/worker.py) and its
decision comes back as `bot_reply`: an answer, choices, a short reply, or a handover. A missing
reply (no worker, a worker crashed) hands over after BOT_TIMEOUT_S — the bot never leaves a
customer unanswered. While `assigned`, customer messages are asked in `assist` mode and the
best knowledge-base answers are pushed to the agent's console as suggestions.
"""
from __future__ import annotations

BOT_TIMEOUT_S = 5.0
BOT = {"kind": "bot", "id": "bot"}
ANGRY_PRIORITY = 8          # an angry customer waits ahead of everyone but the top VIP tier
CONTEXT_MESSAGES = 2        # earlier customer messages sent with a question (follow-ups)


class BotTurns:
    """Uses SessionActor's state, `_append`, `ask`, `emit`, `send`, `push`, timers."""

    def _bot_open(self, body: dict) -> None:
        s = self.state
        s.update(status="bot", bot={"failures": 0, "req": 0, "asked": [], "outside": bool(body.get("outside_hours")),
                                    "outside_message": str(body.get("outside_message", ""))})
        self.emit("session.created", payload={**{k: body[k] for k in ("entry", "issue_type", "rule") if body.get(k)},
                                              "priority": s["priority"], "bot": True}, **self._cols())
        welcome = str(body.get("welcome") or "")
        if welcome:
            self._append({"kind": "text", "content": {"text": welcome}, "from": BOT}, None, None)
        if body.get("outside_hours") and body.get("outside_message"):  # the bot answers; people are away
            self._append({"kind": "text", "content": {"text": str(body["outside_message"])}, "from": BOT}, None, None)
        self._touch()

    def _after_customer_message(self, record: dict) -> None:
        status, content = self.state["status"], record.get("content") or {}
        text = content.get("text") if record.get("kind") == "text" else None
        if status == "bot":
            self._ask_bot(record, text)
        elif status == "assigned" and text and self.state.get("assist"):
            self.ask("bot", {"mode": "assist", "req": self.state["seq"], "seq": self.state["seq"], "text": text,
                             "context": self._bot_context()})

    def _bot_context(self) -> list[str]:
        return list((self.state.get("bot") or {}).get("asked", []))[-CONTEXT_MESSAGES:]

    def _ask_bot(self, record: dict, text: str | None) -> None:
        bot = self.state["bot"]
        choice = (record.get("content") or {}).get("choice")
        if text is None and choice is None:  # a picture, a file: a person looks at it
            self._hand_over("unsupported_message", priority=None)
            return
        bot["req"] = self.state["seq"]
        self.ask("bot", {"mode": "answer", "req": bot["req"], "text": text or "", "choice": choice,
                         "customer_id": self.state["customer_id"],
                         "context": self._bot_context(), "failures": bot["failures"]})
        if text:
            bot["asked"] = [*bot["asked"], text[:500]][-CONTEXT_MESSAGES:]
        self.set_timer("bot", BOT_TIMEOUT_S, "bot_timeout", {"req": bot["req"]})

    def on_bot_timeout(self, body: dict, env) -> None:
        if self.state["status"] == "bot" and body.get("req") == self.state["bot"]["req"]:
            self._hand_over("bot_unavailable", priority=None)

    def on_bot_reply(self, body: dict, env) -> None:
        s = self.state
        if body.get("mode") == "assist":
            self._suggest(body)
            return
        if s["status"] != "bot" or body.get("req") != s["bot"]["req"]:
            return  # late: already handed over, or a newer question is pending
        self.cancel_timer("bot")
        s["bot"]["req"] = 0
        if body.get("failed"):
            self._hand_over("bot_error", priority=None)
            return
        action = body.get("action")
        payload = {k: body.get(k) for k in ("reason", "entry_id", "score", "sentiment", "lang", "ms", "order_id",
                                            "product_ids") if body.get(k) is not None}
        payload["candidates"] = [c.get("id") for c in body.get("candidates") or []]
        if action == "handoff":
            self._hand_over(str(body.get("reason", "")), text=str(body.get("text", "")), payload=payload,
                            priority=ANGRY_PRIORITY if body.get("reason") == "angry" else None)
            return
        content = {"text": str(body.get("text", ""))}
        if action == "choices":
            content["choices"] = [{"id": c["id"], "question": c["question"]} for c in body.get("candidates") or []]
            s["bot"]["failures"] += 1
        elif action == "answer" or body.get("reason") == "product_comparison":   # the customer got what they asked
            s["bot"]["failures"] = 0
        if body.get("cards") and action in ("answer", "reply"):   # a KB entry's cards, an order or product card
            content["cards"] = body["cards"]
        if body.get("comparison") and action == "reply":          # two products side by side (actors/bot/compare.py)
            content["comparison"] = body["comparison"]
        self.emit({"answer": "bot.answered", "choices": "bot.choices"}.get(action, "bot.replied"),
                  payload=payload, **self._cols())
        self._append({"kind": "text", "content": content, "from": BOT}, None, None)

    def _hand_over(self, reason: str, priority: int | None, text: str = "", payload: dict | None = None) -> None:
        """From the bot to people: the queue now (or a left message outside business hours)."""
        s = self.state
        bot = s.get("bot") or {}
        self.cancel_timer("bot")
        if priority is not None and priority > s.get("priority", 0):
            s["priority"] = priority
        if reason == "angry":
            s["flag"] = "angry"
        self.emit("bot.handoff", payload={**(payload or {}), "reason": reason, "priority": s.get("priority", 0),
                                          "outside_hours": bool(bot.get("outside"))}, **self._cols())
        if bot.get("outside"):
            text = bot.get("outside_message") or text
        if text:
            self._append({"kind": "text", "content": {"text": text}, "from": BOT}, None, None)
        if bot.get("outside"):
            s["status"] = "offline"
            self._event_frame("outside_hours", message=bot.get("outside_message", ""))
            self._touch()
            return
        s["status"] = "queued"
        s.setdefault("awaiting", self.clock())  # the customer now waits for a person's answer
        self._event_frame("bot.handoff", reason=reason)
        self.send(self._customer(), "arrive", {"session": self.ref.id})
        self._touch()

    def _suggest(self, body: dict) -> None:
        found = body.get("suggestions") or []
        if self.state["status"] != "assigned" or not found:
            return
        frame = {"t": "suggestions", "session": self.ref.id, "seq": int(body.get("seq", 0)), "items": found}
        for connection, role in self.state.get("subs", {}).items():
            if role != "customer":
                self.push(connection, frame)
        self.emit("bot.suggested", payload={"seq": frame["seq"], "ids": [f.get("id") for f in found]}, **self._cols())
