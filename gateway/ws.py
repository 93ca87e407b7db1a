"""The websocket endpoint `/ws` (docs/protocol.md): authenticate with `hello`, then turn client
frames into envelopes for session actors. The gateway holds no conversation state: actors
answer (acks, messages, errors) by pushing frames back through the hub."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

from quart import Blueprint, websocket
from redis import exceptions as redis_errors

from storage.actor_store import StoreUnavailable

from . import limits, ws_actions
from .auth import AuthError
from .connection import MAX_REFUSALS, Connection, TokenBucket
from .context import Services, resolve_token, services
from .protocol import (CLOSE_FLOODING, CLOSE_OVERLOADED, CLOSE_TIMEOUT, CLOSE_UNAUTHENTICATED, FrameError, Hello, Msg,
                       Open, Read, Subscribe, Typing, decode, encode, parse)
from .permissions import Action
from .ws_actions import ACTIONS, session_ref

log = logging.getLogger(__name__)
ws_api = Blueprint("ws", __name__)

HELLO_TIMEOUT_S = 10
CLOSE_INTERNAL_ERROR = 1011
HEARTBEAT_S = 25
# Redis out of reach for a moment (a restart, a failover, a network blip): nothing of the frame is
# known to have happened, so the client is told to send it again (`unavailable`), and stays.
UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, StoreUnavailable)


@ws_api.websocket("/ws")
async def ws_endpoint():
    svc = services()
    await websocket.accept()
    ws = websocket._get_current_object()
    ip = limits.client_ip()
    if svc.hub.by_ip.get(ip, 0) >= svc.max_connections_per_ip:
        await ws.close(4002, f"too many connections from {ip}")
        return
    svc.hub.by_ip[ip] = svc.hub.by_ip.get(ip, 0) + 1
    try:
        await _serve(svc, ws, ip)
    except Exception:   # a bug, not the client's doing: logged, and closed as one (not 1000, "normal")
        log.exception("websocket from %s failed", ip)
        try:
            await ws.close(CLOSE_INTERNAL_ERROR, "internal error")
        except Exception:
            pass        # already closed
    finally:
        svc.hub.by_ip[ip] -= 1


async def _serve(svc: Services, ws, ip: str) -> None:
    conn = await _handshake(svc, ws, ip)
    if conn is None:
        return
    writer = asyncio.create_task(conn.write_forever())
    try:
        await _reader(svc, ws, conn)
    finally:
        svc.hub.remove(conn)
        writer.cancel()
        await _unsubscribe(svc, conn)


async def _handshake(svc: Services, ws, ip: str) -> Connection | None:
    try:
        data = _message(await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT_S))
    except asyncio.TimeoutError:
        await ws.close(CLOSE_TIMEOUT, "no hello")
        return None
    binary = isinstance(data, bytes)
    try:
        hello = parse(decode(data))
        if not isinstance(hello, Hello):
            raise FrameError("not_ready", "the first frame must be hello")
        principal = await resolve_token(hello.token)
    except (FrameError, AuthError) as exc:
        code = exc.code
        await ws.send(encode({"t": "error", "code": code, "message": exc.message}, binary))
        await ws.close(CLOSE_UNAUTHENTICATED, code)
        return None
    except UNREACHABLE as exc:   # an agent's token is checked against its record: try again soon
        log.warning("websocket hello: Redis unreachable: %s", exc)
        await ws.send(encode(_unavailable(None), binary))
        await ws.close(CLOSE_OVERLOADED, "unavailable")
        return None
    conn = Connection(uuid.uuid4().hex[:16], principal, binary, ws.send, ws.close, svc.read_log,
                      bucket=TokenBucket(svc.frames_per_s, 2 * svc.frames_per_s), ip=ip)
    await ws.send(encode({"t": "welcome", "conn": conn.id, "heartbeat_s": HEARTBEAT_S,
                          "principal": {"kind": principal.kind, "merchant": principal.merchant, "id": principal.id,
                                        "role": principal.role},
                          "limits": {"max_frame_bytes": 65536, "frames_per_s": svc.frames_per_s}}, binary))
    svc.hub.add(conn)  # before resuming: the actors' answers must find the connection
    try:
        try:
            await ws_actions.agent_joined(svc, conn)
        except FrameError as exc:
            conn.offer(exc.frame())
        for session, after in hello.resume.items():
            try:
                await _send(svc, conn, session, "subscribe", {"after": after, "role": principal.role})
            except FrameError as exc:
                conn.offer(exc.frame())
    except BaseException:
        svc.hub.remove(conn)
        raise
    return conn


async def _reader(svc: Services, ws, conn: Connection) -> None:
    while True:
        try:
            data = _message(await asyncio.wait_for(ws.receive(), 2 * HEARTBEAT_S))
        except asyncio.TimeoutError:
            await ws.close(CLOSE_TIMEOUT, "silent for two heartbeats")
            return
        if not conn.bucket.take():
            conn.refusals += 1
            if conn.refusals > MAX_REFUSALS:
                await ws.close(CLOSE_FLOODING, "flooding")
                return
            conn.offer({"t": "error", "code": "rate_limited",
                        "message": f"slow down: {svc.frames_per_s} frames/s, bursts of {2 * svc.frames_per_s}"})
            continue
        frame = None
        try:
            frame = parse(decode(data))
            await _dispatch(svc, conn, frame)
        except FrameError as exc:
            conn.offer(exc.frame())
        except UNREACHABLE as exc:
            log.warning("websocket %s: %s frame: Redis unreachable: %s", conn.id, getattr(frame, "t", "?"), exc)
            conn.offer(_unavailable(_ref(frame)))


def _unavailable(ref) -> dict:
    return {"t": "error", "code": "unavailable", "message": "storage is briefly unreachable; send the frame again",
            "ref": ref}


def _ref(frame) -> str | None:
    """What an error names of the frame it answers: its cid, its id, else its session."""
    for name in ("cid", "id", "session"):
        value = getattr(frame, name, None)
        if isinstance(value, str):
            return value
    return None


def _message(data: str | bytes | None) -> str | bytes:
    """Quart hands an empty binary message over as None (`event.get("bytes") or event["text"]`)."""
    return b"" if data is None else data


async def _dispatch(svc: Services, conn: Connection, frame) -> None:
    p = conn.principal
    if isinstance(frame, Hello):
        raise FrameError("invalid_frame", "hello was already sent")
    if frame.t == "ping":
        conn.offer({"t": "pong", "ts": int(time.time() * 1000)})
    elif isinstance(frame, Open):
        await ws_actions.open_conversation(svc, conn, frame)
    elif isinstance(frame, Subscribe):
        ws_actions.check_agent_action(conn, Action.CONVERSATION_VIEW_OWN, frame.session)
        await _send(svc, conn, frame.session, "subscribe", {"after": frame.after, "role": p.role})
    elif isinstance(frame, Msg):
        ws_actions.check_agent_action(conn, Action.CONVERSATION_SEND, frame.cid)
        await _send(svc, conn, frame.session, "message",
                    {"cid": frame.cid, "kind": frame.kind, "content": frame.content}, ref=frame.cid)
    elif isinstance(frame, Typing):
        await _send(svc, conn, frame.session, "typing", {"on": frame.on})
    elif isinstance(frame, Read):
        await _send(svc, conn, frame.session, "read", {"seq": frame.seq})
    elif type(frame) in ACTIONS:
        await ACTIONS[type(frame)](svc, conn, frame)


async def _send(svc: Services, conn: Connection, session: str, type_: str, body: dict, ref=None) -> None:
    """One envelope to the session's actor; returns once it is committed there."""
    await ws_actions.send(svc, conn, session_ref(conn, session), type_, body, ref)


async def _unsubscribe(svc: Services, conn: Connection) -> None:
    try:
        await ws_actions.agent_left(svc, conn)
    except FrameError:
        pass
    for session in list(conn.last_seq):
        try:
            await _send(svc, conn, session, "unsubscribe", {})
        except FrameError:
            pass
