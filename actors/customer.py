"""CustomerActor: what the runtime remembers about one customer of a merchant across
conversations — who served them last and when (returning-customer routing), how many
conversations they opened. Small, passivates when idle; its snapshot is the durable record."""
from __future__ import annotations

from .base import Actor
from .envelope import ActorRef


class CustomerActor(Actor):
    kind = "customer"

    def initial_state(self) -> dict:
        return {"last_agent": "", "last_served_at": None, "conversations": 0}

    def on_arrive(self, body: dict, env) -> None:
        """A new conversation of this customer asks what is known of them."""
        s = self.state
        s["conversations"] += 1
        self.send(ActorRef("session", self.ref.merchant, str(body["session"])), "customer_info",
                  {"last_agent": s["last_agent"], "last_served_at": s["last_served_at"],
                   "conversations": s["conversations"]})

    def on_served(self, body: dict, env) -> None:
        self.state.update(last_agent=str(body["agent_id"]), last_served_at=float(body.get("at", self.clock())))
