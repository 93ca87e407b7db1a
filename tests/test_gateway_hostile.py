"""Malformed and hostile frames: each gets an error frame naming the problem, or a documented
close code; the gateway keeps serving everyone else."""
from __future__ import annotations

import msgpack
import orjson
import pytest
import trio
import trio_websocket

from storage.redis_server import start_redis
from tests.gateway_cluster import Peakdesk, connected

pytestmark = pytest.mark.timeout(300)

S = "0123456789abcdef01234567"  # a well-formed session id nobody opened
TEXT = {"text": "hi"}

# (name, frame or raw bytes/str, expected error code)
ERRORS = [
    ("bad JSON", "raw:{\"t\": \"msg\",", "invalid_json"),
    ("bad msgpack", b"raw:\xc1\xc1", "invalid_msgpack"),
    ("JSON that is not a map", "raw:[1, 2, 3]", "invalid_frame"),
    ("msgpack that is not a map", b"raw:" + msgpack.packb([1, 2]), "invalid_frame"),
    ("no type", {"session": S}, "unknown_type"),
    ("unknown type", {"t": "drop_tables"}, "unknown_type"),
    ("type of wrong type", {"t": 7}, "unknown_type"),
    ("second hello", {"t": "hello", "token": "x"}, "invalid_frame"),
    ("message without cid", {"t": "msg", "session": S, "kind": "text", "content": TEXT}, "invalid_frame"),
    ("cid with spaces", {"t": "msg", "cid": "a b", "session": S, "kind": "text", "content": TEXT}, "invalid_frame"),
    ("session id injection", {"t": "msg", "cid": "x", "session": "1' OR '1'='1", "kind": "text", "content": TEXT}, "invalid_frame"),
    ("unknown kind", {"t": "msg", "cid": "x", "session": S, "kind": "exe", "content": TEXT}, "invalid_frame"),
    ("text too long", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {"text": "长" * 4001}}, "invalid_frame"),
    ("empty text", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {"text": ""}}, "invalid_frame"),
    ("control characters", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {"text": "a\x00b"}}, "invalid_frame"),
    ("content of wrong type", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": "hi"}, "invalid_frame"),
    ("extra content field", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {"text": "a", "js": 1}}, "invalid_frame"),
    ("image that is a program", {"t": "msg", "cid": "x", "session": S, "kind": "image",
                                 "content": {"attachment_id": "0" * 32, "name": "a.exe", "mime": "application/x-msdownload", "size": 1}}, "invalid_frame"),
    ("negative size", {"t": "msg", "cid": "x", "session": S, "kind": "file",
                       "content": {"attachment_id": "0" * 32, "name": "a", "mime": "text/plain", "size": -1}}, "invalid_frame"),
    ("price that is not money", {"t": "msg", "cid": "x", "session": S, "kind": "product",
                                 "content": {"product_id": "1", "title": "t", "price": "free"}}, "invalid_frame"),
    ("script URL in a card", {"t": "msg", "cid": "x", "session": S, "kind": "product",
                              "content": {"product_id": "1", "title": "t", "url": "javascript:alert(1)"}}, "invalid_frame"),
    ("comparison of one product", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {
        "text": "a", "comparison": {"products": [{"product_id": "1", "title": "t"}], "rows": [{"name": "n", "a": "1", "b": "2"}]}}}, "invalid_frame"),
    ("comparison with a script card", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {
        "text": "a", "comparison": {"products": [{"product_id": "1", "title": "t"}, {"product_id": "2", "title": "t", "url": "javascript:x"}],
                                    "rows": [{"name": "n", "a": "1", "b": "2"}]}}}, "invalid_frame"),
    ("comparison of 61 rows", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {
        "text": "a", "comparison": {"products": [{"product_id": "1", "title": "t"}, {"product_id": "1", "title": "t"}], "rows": [{"name": "n", "a": "1", "b": "2"}] * 61}}}, "invalid_frame"),
    ("read of seq 0", {"t": "read", "session": S, "seq": 0}, "invalid_frame"),
    ("typing not a boolean", {"t": "typing", "session": S, "on": "yes"}, "invalid_frame"),
    ("subscribe after negative", {"t": "subscribe", "session": S, "after": -5}, "invalid_frame"),
    ("frame too large", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": {"text": "x" * 70_000}}, "frame_too_large"),
    ("unknown session", {"t": "msg", "cid": "x", "session": S, "kind": "text", "content": TEXT}, "unknown_session"),
    ("another merchant's session id", {"t": "subscribe", "session": "other-merchant-session", "after": 0}, "unknown_session"),
    ("agent opening a conversation", {"t": "open", "id": "x"}, "forbidden"),
    ("status that is not one", {"t": "status", "status": "sleeping"}, "invalid_frame"),
    ("CSAT score out of range", {"t": "csat", "session": S, "score": 9}, "invalid_frame"),
    ("transfer to nobody", {"t": "transfer", "session": S}, "invalid_frame"),
    ("transfer to an agent and a group", {"t": "transfer", "session": S, "to_agent": "a1", "to_group": "g"}, "invalid_frame"),
    ("note with control characters", {"t": "note", "cid": "x", "session": S, "text": "a\x07b"}, "invalid_frame"),
    ("chat to no one", {"t": "chat", "cid": "x", "text": "hi"}, "invalid_frame"),
    ("pick from a malformed group", {"t": "pick", "session": S, "group": "G!"}, "invalid_frame"),
    ("agent rating a conversation", {"t": "csat", "session": S, "score": 5}, "forbidden"),
    ("closing someone else's session", {"t": "close", "session": S}, "unknown_session"),
]


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("gwh"), "pd-test-gwh", "gwh:")
    yield p
    p.stop()


async def still_serving(pd: Peakdesk) -> None:
    async with connected(pd.url, pd.visitor_token()) as bystander:
        await bystander.send({"t": "ping"})
        await bystander.until("pong")


@pytest.mark.parametrize("name,frame,code", ERRORS, ids=[e[0] for e in ERRORS])
def test_hostile_frame_gets_an_error_frame_and_the_connection_survives(pd, name, frame, code):
    async def main():
        token = pd.owner_token if code == "forbidden" else pd.visitor_token()
        async with connected(pd.url, token, binary=isinstance(frame, bytes)) as client:
            if isinstance(frame, (str, bytes)):
                await client.send_raw(frame[4:])
            else:
                await client.send(frame)
            error = await client.until("error")
            assert error["code"] == code, error
            assert error["message"]
            await client.send({"t": "ping"})  # still open, still answering
            await client.until("pong")
        await still_serving(pd)
    trio.run(main)


async def closed_with(ws) -> int:
    with trio.fail_after(15):
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code


@pytest.mark.parametrize("first", [
    {"t": "hello", "token": "not-a-token"},
    {"t": "ping"},
    "raw:not json at all",
])
def test_no_valid_hello_is_closed_4401(pd, first):
    async def main():
        async with trio_websocket.open_websocket_url(pd.url) as ws:
            await ws.send_message(first[4:] if isinstance(first, str) else __import__("orjson").dumps(first).decode())
            assert await closed_with(ws) == 4401
        await still_serving(pd)
    trio.run(main)


def test_a_flood_is_rate_limited_then_closed_4429_while_others_are_served(pd):
    async def main():
        async with connected(pd.url, pd.visitor_token()) as flooder:
            for _ in range(200):
                await flooder.send({"t": "ping"})
            codes = []
            with trio.fail_after(20):
                try:
                    while True:
                        frame = await flooder.recv()
                        codes.append(frame.get("code") or frame["t"])
                except trio_websocket.ConnectionClosed as exc:
                    close = exc.reason.code
            assert "rate_limited" in codes and close == 4429
        await still_serving(pd)
    trio.run(main)


def test_a_huge_frame_closes_the_connection_but_not_the_gateway(pd):
    async def main():
        codes = []
        # Once closed, the client does not wait out the TCP teardown: Hypercorn leaves the socket
        # open for a while after a 1009 (unread bytes still in flight), which is not under test.
        with trio.CancelScope() as done:
            async with connected(pd.url, pd.visitor_token()) as client:
                await client.send_raw("x" * (2 * 1024 * 1024))
                with trio.fail_after(15):
                    try:
                        while True:
                            await client.recv()
                    except trio_websocket.ConnectionClosed as exc:
                        codes.append(exc.reason.code)
                        done.cancel()
        assert codes and codes[0] in (1009, 4413)
        await still_serving(pd)
    trio.run(main)


# -- Redis out of reach while the gateway handles a frame ----------------------------------------
@pytest.fixture
def pd_own_redis(ray_session, tmp_path):
    """A peakdesk on a Redis of its own, which the test stops and starts again."""
    server = start_redis(tmp_path / "redis")
    (tmp_path / "data").mkdir()
    p = Peakdesk(server.url, tmp_path / "data", "pd-test-gwh-redis", "gwr:")
    yield p, server
    if server.process.poll() is not None:
        server.start()
    p.stop()
    server.stop()


async def answer_to(client, ref: str, timeout: float = 30) -> dict:
    """The `opened`, `ack` or `error` that answers the frame `ref` names."""
    with trio.fail_after(timeout):
        while True:
            frame = await client.recv(timeout)
            if frame.get("id", frame.get("cid", frame.get("ref"))) == ref and frame["t"] in ("opened", "ack", "error"):
                return frame


async def until_taken(client, frame: dict, ref: str) -> dict:
    """What a client does with `unavailable`: the same frame again, after a little while."""
    with trio.fail_after(90):
        while True:
            await client.send(frame)
            got = await answer_to(client, ref)
            if got["t"] != "error":
                return got
            assert got["code"] == "unavailable", got
            await trio.sleep(0.5)


def test_a_frame_while_redis_is_unreachable_is_answered_unavailable_and_the_connection_stays(pd_own_redis):
    """Regression: a Redis error while the gateway handled a frame (here `open`, which counts the
    client's new conversations and reads the merchant's records) escaped the frame handler and
    closed the websocket with 1011. Now the frame gets `unavailable`, the client sends it again."""
    pd, server = pd_own_redis
    token = pd.visitor_token()

    async def main():
        async with connected(pd.url, token) as customer:
            await customer.send({"t": "open", "id": "o1"})
            session = (await customer.until("opened", id="o1"))["session"]
            server.kill()
            try:
                await customer.send({"t": "open", "id": "o2"})
                error = await answer_to(customer, "o2")
                assert (error["t"], error["code"]) == ("error", "unavailable") and "again" in error["message"], error
                await customer.send({"t": "ping"})                      # still open, still answering
                await customer.until("pong")
                # an agent's hello is checked against its record: refused for now, reconnect later
                async with trio_websocket.open_websocket_url(pd.url) as agent:
                    await agent.send_message(orjson.dumps({"t": "hello", "token": pd.owner_token}).decode())
                    with trio.fail_after(30):
                        refused = orjson.loads(await agent.get_message())
                    assert (refused["t"], refused["code"]) == ("error", "unavailable"), refused
                    assert await closed_with(agent) == 4002
            finally:
                server.start()   # same port, same data (AOF)
            opened = await until_taken(customer, {"t": "open", "id": "o2"}, "o2")
            assert opened["session"] != session
            msg = {"t": "msg", "cid": "after-outage", "session": session, "kind": "text",
                   "content": {"text": "回来了"}}
            assert (await until_taken(customer, msg, "after-outage"))["seq"] >= 1
    trio.run(main)
