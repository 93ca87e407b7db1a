"""A small async client for the peakdesk websocket protocol (docs/protocol.md), on trio and
trio-websocket — for merchants' scripts, the tests and the load benchmark.

    async with connect("ws://127.0.0.1:8080/ws", token) as client:
        session = await client.open(group="presales")
        seq = await client.send_message(session, "text", {"text": "在吗？"})
        frame = await client.next_message(session)

Reconnecting after a drop is `connect(url, token, resume=old.last_seq)`: the server replays what
the client missed, and `send_message` with the same `cid` never makes a second message.
"""
from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import msgpack
import orjson
import trio
import trio_websocket


class ClientError(Exception):
    """The server answered a request with an error frame (or closed during the handshake)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def encode(frame: dict, binary: bool) -> str | bytes:
    return msgpack.packb(frame) if binary else orjson.dumps(frame).decode()


def decode(data: str | bytes) -> dict:
    return msgpack.unpackb(data) if isinstance(data, bytes) else orjson.loads(data)


class Client:
    def __init__(self, ws: trio_websocket.WebSocketConnection, binary: bool):
        self.ws, self.binary = ws, binary
        self.last_seq: dict[str, int] = {}
        self.conn = self.principal = None
        self.heartbeat_s = 25
        self._waiters: dict[tuple, trio.MemorySendChannel] = {}
        self._inbox_send, self._inbox = trio.open_memory_channel(10_000)
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.passed: list[dict] = []
        self.repeats = 0

    # -- plumbing ------------------------------------------------------------------------------
    async def send(self, frame: dict) -> None:
        await self.ws.send_message(encode(frame, self.binary))

    async def _read_forever(self) -> None:
        try:
            while True:
                self._route(decode(await self.ws.get_message()))
        except trio_websocket.ConnectionClosed as exc:
            self.close_code, self.close_reason = exc.reason.code, exc.reason.reason
        finally:
            self._inbox_send.close()

    def _route(self, frame: dict) -> None:
        t = frame.get("t")
        if t == "msg":
            session, seq = frame["session"], frame["seq"]
            if seq <= self.last_seq.get(session, 0):
                self.repeats += 1  # seen already: a resume overlapping; counted for `peakdesk bench`
                return
            self.last_seq[session] = seq
        key = {"ack": ("ack", frame.get("cid")), "opened": ("opened", frame.get("id")),
               "resumed": ("resumed", frame.get("session")), "pong": ("pong", None),
               "error": ("reply", frame.get("ref"))}.get(t)
        waiter = self._waiters.get(key) if key else None
        if waiter is not None:
            waiter.send_nowait(frame)
        elif t != "pong":
            self._inbox_send.send_nowait(frame)

    async def _request(self, frame: dict, key: tuple, timeout: float) -> dict:
        send, receive = trio.open_memory_channel(1)
        self._waiters[key] = send
        error_key = ("reply", key[1])
        self._waiters[error_key] = send
        try:
            await self.send(frame)
            with trio.fail_after(timeout):
                answer = await receive.receive()
        finally:
            self._waiters.pop(key, None)
            self._waiters.pop(error_key, None)
        if answer.get("t") == "error":
            raise ClientError(answer["code"], answer.get("message", ""))
        return answer

    # -- the protocol ----------------------------------------------------------------------------
    async def open(self, group: str | None = None, channel: str = "web", entry: dict | None = None,
                   issue_type: str | None = None, timeout: float = 10) -> str:
        """Start a conversation (customers); returns its session id."""
        rid = uuid.uuid4().hex[:12]
        frame = {"t": "open", "id": rid, "channel": channel,
                 **({"group": group} if group else {}), **({"entry": entry} if entry else {}),
                 **({"issue_type": issue_type} if issue_type else {})}
        answer = await self._request(frame, ("opened", rid), timeout)
        self.last_seq.setdefault(answer["session"], 0)
        return answer["session"]

    async def subscribe(self, session: str, after: int | None = None, timeout: float = 10) -> int:
        """Follow a conversation from `after` (default: what this client saw); returns its last seq
        once the missed messages are in (`next_message` yields them)."""
        after = self.last_seq.get(session, 0) if after is None else after
        answer = await self._request({"t": "subscribe", "session": session, "after": after},
                                     ("resumed", session), timeout)
        return answer["last_seq"]

    async def send_message(self, session: str, kind: str, content: dict, cid: str | None = None,
                           timeout: float = 10) -> int:
        """Send and wait for the durable ack; returns the message's seq. Safe to call again with
        the same cid after a reconnect: the server answers with the original seq."""
        cid = cid or uuid.uuid4().hex
        frame = {"t": "msg", "cid": cid, "session": session, "kind": kind, "content": content}
        return (await self._request(frame, ("ack", cid), timeout))["seq"]

    async def typing(self, session: str, on: bool = True) -> None:
        await self.send({"t": "typing", "session": session, "on": on})

    async def read(self, session: str, seq: int) -> None:
        await self.send({"t": "read", "session": session, "seq": seq})

    # -- agents and the conversation's lifecycle (docs/protocol.md "Routing and collaboration") ----
    async def set_status(self, status: str) -> None:
        """Agents: online | busy | away | offline. The server answers with an `agent` frame."""
        await self.send({"t": "status", "status": status})

    async def close(self, session: str) -> None:
        await self.send({"t": "close", "session": session})

    async def rate(self, session: str, score: int, comment: str = "") -> None:
        """Customers: CSAT 1-5 after the conversation closed."""
        await self.send({"t": "csat", "session": session, "score": score, "comment": comment})

    async def transfer(self, session: str, *, to_agent: str | None = None, to_group: str | None = None,
                       note: str = "") -> None:
        frame = {"t": "transfer", "session": session, "note": note}
        frame.update({"to_agent": to_agent} if to_agent else {"to_group": to_group})
        await self.send(frame)

    async def note(self, session: str, text: str, cid: str | None = None, timeout: float = 10) -> int:
        """An internal note (agents only; customers never see it); returns its seq."""
        cid = cid or uuid.uuid4().hex
        return (await self._request({"t": "note", "cid": cid, "session": session, "text": text},
                                    ("ack", cid), timeout))["seq"]

    async def pick(self, session: str, group: str) -> None:
        await self.send({"t": "pick", "session": session, "group": group})

    async def takeover(self, session: str) -> None:
        await self.send({"t": "takeover", "session": session})

    async def chat(self, text: str, *, to_agent: str | None = None, group: str | None = None,
                   cid: str | None = None, timeout: float = 10) -> int:
        """Agent-to-agent chat, private or to a group; returns the message's seq in its room.
        Colleagues receive `{"t": "chat", "room": ..., "seq": ..., "from": ..., "text": ...}`."""
        cid = cid or uuid.uuid4().hex
        frame = {"t": "chat", "cid": cid, "text": text, **({"to_agent": to_agent} if to_agent else {"group": group})}
        return (await self._request(frame, ("ack", cid), timeout))["seq"]

    async def monitor(self, on: bool = True) -> dict:
        """Supervisors: `live` frames every 2 s and `alert` frames from now on (or no more)."""
        await self.send({"t": "monitor", "on": on})
        return await self.until("monitoring")

    async def until(self, t: str, timeout: float = 10, **match) -> dict:
        """The next frame of type `t` whose fields match; frames passed over are kept in `passed`."""
        with trio.fail_after(timeout):
            while True:
                frame = await self._inbox.receive()
                if frame.get("t") == t and all(frame.get(k) == v for k, v in match.items()):
                    return frame
                self.passed.append(frame)

    async def ping(self, timeout: float = 10) -> dict:
        return await self._request({"t": "ping"}, ("pong", None), timeout)

    async def receive(self, timeout: float | None = 10) -> dict:
        """The next frame not consumed by a request (msg, typing, read, event, error, bye)."""
        with trio.fail_after(timeout) if timeout else _no_timeout():
            return await self._inbox.receive()

    async def next_message(self, session: str | None = None, timeout: float = 10) -> dict:
        with trio.fail_after(timeout):
            while True:
                frame = await self._inbox.receive()
                if frame.get("t") == "msg" and (session is None or frame["session"] == session):
                    return frame

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_s * 0.8)
            await self.send({"t": "ping"})


class _no_timeout:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@asynccontextmanager
async def connect(url: str, token: str, *, encoding: str = "json", resume: dict[str, int] | None = None,
                  timeout: float = 10, ssl_context=None) -> AsyncIterator[Client]:
    """Connect (ws:// or wss://; `ssl_context` to trust a private CA), authenticate and
    (optionally) resume sessions; yields a ready Client."""
    if encoding not in ("json", "msgpack"):
        raise ValueError(f"encoding must be json or msgpack, got {encoding!r}")
    async with trio_websocket.open_websocket_url(url, connect_timeout=timeout, ssl_context=ssl_context) as ws:
        client = Client(ws, encoding == "msgpack")
        await client.send({"t": "hello", "token": token, **({"resume": resume} if resume else {})})
        with trio.fail_after(timeout):
            try:
                welcome = decode(await ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                raise ClientError("closed", f"{exc.reason.code} {exc.reason.reason}") from None
        if welcome.get("t") != "welcome":
            raise ClientError(welcome.get("code", "unexpected"), welcome.get("message", str(welcome)))
        client.conn, client.principal = welcome["conn"], welcome["principal"]
        client.heartbeat_s = welcome.get("heartbeat_s", 25)
        client.last_seq.update(resume or {})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read_forever)
            nursery.start_soon(client._heartbeat)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
