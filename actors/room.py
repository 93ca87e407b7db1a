"""RoomActor: agents talking among themselves — a private chat between two agents
(`dm.<agent>.<agent>`, ids sorted) or a group's chat (`grp.<group>`). Messages are numbered,
logged durably (history: GET /api/v1/chats/<room>), acknowledged to the sender and relayed to
each member's consoles through their AgentActor. The gateway names the members (it knows the
records); customers never reach a room."""
from __future__ import annotations

from .base import Actor, Rejected
from .envelope import ActorRef

MAX_REMEMBERED_CIDS = 512


class RoomActor(Actor):
    kind = "room"

    def initial_state(self) -> dict:
        return {"seq": 0, "cids": {}}

    def on_message(self, body: dict, env) -> None:
        who, connection, cid = body.get("from") or {}, body.get("connection", ""), body.get("cid")
        members = [str(m) for m in body.get("members", [])]
        if who.get("kind") != "agent" or who.get("id") not in members:
            raise Rejected("not a member", (connection, {"t": "error", "code": "forbidden", "ref": cid,
                                                         "message": f"you are not in chat {self.ref.id}"}))
        cids = self.state["cids"]
        if cid in cids:  # re-sent after a lost ack
            self.push(connection, {"t": "ack", "cid": cid, "room": self.ref.id, "seq": cids[cid]})
            return
        seq = self.state["seq"] = self.state["seq"] + 1
        text = str(body["text"])
        event = self.emit("chat.sent", agent_id=who["id"], payload={"room": self.ref.id, "seq": seq, "text": text})
        frame = {"t": "chat", "room": self.ref.id, "seq": seq, "ts": event.ts, "cid": cid, "from": who, "text": text}
        self.append_log(seq, frame)
        cids[cid] = seq
        while len(cids) > MAX_REMEMBERED_CIDS:
            cids.pop(next(iter(cids)))
        self.push(connection, {"t": "ack", "cid": cid, "room": self.ref.id, "seq": seq})
        for member in members:
            self.send(ActorRef("agent", self.ref.merchant, member), "relay", {"frame": frame})
