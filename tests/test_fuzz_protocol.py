"""Fuzzing the websocket protocol (issue 13): gateway/protocol.py's `decode` and `parse` (content
validation and rich-text sanitising included) with arbitrary text, bytes, JSON and msgpack, and
with valid frames of every type mutated a few edits at a time (wrong types, missing or extra
fields, hostile strings, huge numbers). Whatever arrives ends as a frame of a client type or as a
`FrameError` of a documented code whose `error` frame encodes both ways — never another exception.

Then the same over a real websocket, against a real gateway (tests/gateway_cluster.py): a few
hundred fuzzed frames, text and binary, as a visitor and as an owner; each must be answered with
documented frames and leave the connection serving (a `ping` after each is answered `pong`),
and the gateway keeps serving everyone else.

Bounded: hypothesis `max_examples` below (PEAKDESK_FUZZ=deep: five times as many).
"""
from __future__ import annotations

import asyncio
import copy
import os
import re

import msgpack
import orjson
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel
from quart import Quart
from quart.testing import WebsocketResponseError

from gateway import errors
from gateway.protocol import MAX_FRAME_BYTES, TYPES, FrameError, Msg, decode, encode, parse, sanitize_html
from tests.fuzz_support import slots
from tests.gateway_cluster import Peakdesk, connected

pytestmark = pytest.mark.timeout(300)

DEEP = os.environ.get("PEAKDESK_FUZZ") == "deep"
SCALE = 5 if DEEP else 1
DECODE_CODES = {"frame_too_large", "invalid_json", "invalid_msgpack", "invalid_frame"}
PARSE_CODES = {"unknown_type", "invalid_frame"}
# docs/protocol.md "Errors and closing": every code an error frame may carry
DOCUMENTED_CODES = {"invalid_json", "invalid_msgpack", "invalid_frame", "unknown_type", "frame_too_large",
                    "rate_limited", "unknown_session", "forbidden", "session_closed", "not_ready", "unavailable",
                    "invalid_state", "agent_unavailable"}
_FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


def fuzz(examples: int) -> settings:
    return settings(_FUZZ, max_examples=examples * SCALE)


# -- valid frames of every client type, to mutate ------------------------------------------------
S = "0123456789abcdef01234567"
ATTACHMENT = {"attachment_id": "0" * 32, "name": "照片.png", "size": 1024}
PRODUCT = {"product_id": "p-1", "title": "电饭煲 Rice cooker", "price": "299.00", "currency": "CNY",
           "image_url": "https://shop.example/p-1.png", "url": "https://shop.example/p-1"}
CONTENT = {
    "text": {"text": "你好，我的订单到哪了？"},
    "rich": {"html": '<p><b>大促</b> <a href="https://shop.example">link</a></p>'},
    "emoji": {"emoji": "👍"},
    "image": {**ATTACHMENT, "mime": "image/png"},
    "audio": {**ATTACHMENT, "mime": "audio/ogg"},
    "video": {**ATTACHMENT, "mime": "video/mp4"},
    "file": {**ATTACHMENT, "mime": "application/pdf"},
    "product": PRODUCT,
    "order": {"order_id": "o-1", "status": "shipped", "total": "12.50", "currency": "CNY",
              "items": [{"title": "杯子 Cup", "qty": 2}]},
}
VALID = [
    {"t": "hello", "token": "eyJ.x.y", "resume": {S: 3}},
    {"t": "open", "id": "c-1", "group": "presales", "channel": "web", "issue_type": "退货",
     "entry": {"page": "https://shop.example/p-1", "referrer": ""}},
    {"t": "subscribe", "session": S, "after": 0},
    *({"t": "msg", "cid": f"m-{kind}", "session": S, "kind": kind, "content": content} for kind, content in CONTENT.items()),
    {"t": "msg", "cid": "m-cmp", "session": S, "kind": "text", "content": {
        "text": "对比 compare", "choice": "kb-1", "comparison": {
            "products": [PRODUCT, {**PRODUCT, "product_id": "p-2"}], "rows": [{"name": "容量", "a": "3 L", "b": "4 L"}]}}},
    {"t": "typing", "session": S, "on": True},
    {"t": "read", "session": S, "seq": 1},
    {"t": "ping"},
    {"t": "status", "status": "busy"},
    {"t": "close", "session": S},
    {"t": "csat", "session": S, "score": 5, "comment": "很好"},
    {"t": "transfer", "session": S, "to_group": "presales", "note": "VIP"},
    {"t": "transfer", "session": S, "to_agent": "a-1"},
    {"t": "note", "cid": "n-1", "session": S, "text": "内部备注"},
    {"t": "pick", "session": S, "group": "presales"},
    {"t": "takeover", "session": S},
    {"t": "chat", "cid": "c-2", "to_agent": "a-1", "text": "帮我看一下"},
    {"t": "chat", "cid": "c-3", "group": "presales", "text": "谁有空"},
    {"t": "monitor", "on": False},
]

# -- values --------------------------------------------------------------------------------------
HOSTILE = st.sampled_from([
    "", " ", "\x00", "a\x07b", "\u2028", "\ufeff", "\u202e", "🦄" * 3, "长" * 4001, "x" * 70, "0" * 32,
    "javascript:alert(1)", "<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "../../etc/passwd",
    "' OR '1'='1", "${jndi:ldap://x}", "%s%n", "NaN", "null", "true", "image/png", "IMAGE/PNG", "application/x-msdownload",
    "https://", "http://a b", "1.001", "-1", "1e3", "USD", "usd"])
NUMBERS = st.one_of(st.integers(-(2 ** 63), 2 ** 64 - 1), st.sampled_from([0, -1, 1, 5, 6, 2 ** 31, 2 ** 53 + 1]),
                    st.floats(allow_nan=False, allow_infinity=False))
JSON_SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=30), HOSTILE)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=4) |
                           st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=12)
MSGPACK_SCALARS = st.one_of(JSON_SCALARS, st.binary(max_size=24), st.floats(),
                            st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
                            st.builds(msgpack.Timestamp, st.integers(-(2 ** 63), 2 ** 63 - 1), st.integers(0, 999_999_999)))
MSGPACK_VALUES = st.recursive(MSGPACK_SCALARS, lambda kids: st.lists(kids, max_size=4) |
                              st.dictionaries(st.text(max_size=12) | st.binary(max_size=8) | st.integers(-(2 ** 63), 2 ** 64 - 1), kids,
                                              max_size=4), max_leaves=12)


@st.composite
def mutated_frames(draw, values=JSON_VALUES):
    """A valid frame with 1-3 edits: a value replaced (by a hostile one, or one of another type),
    a field removed, an unknown or known field added."""
    frame = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        places = slots(frame)
        container, key = draw(st.sampled_from(places))
        edit = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if edit == "replace":
            container[key] = draw(values)
        elif edit == "remove":
            del container[key]
        else:
            target = container[key] if isinstance(container[key], dict) else frame
            name = draw(st.sampled_from(["t", "cid", "id", "session", "kind", "content", "text", "mime", "extra", "__proto__"])
                        | st.text(max_size=8))
            target[name] = draw(values)
        if not frame:
            break
    return frame


# -- the property ------------------------------------------------------------------------------
def check_error(exc: FrameError, codes: set) -> None:
    assert exc.code in codes, exc.code
    assert isinstance(exc.message, str) and exc.message
    assert exc.ref is None or isinstance(exc.ref, (str, int))
    frame = exc.frame()
    for binary in (False, True):   # the error frame goes back to the client in its encoding
        assert decode(encode(frame, binary)) == frame


def check_parsed(parsed: BaseModel) -> None:
    assert parsed.t in TYPES
    dumped = parsed.model_dump()
    if isinstance(parsed, Msg) and parsed.kind == "rich":
        html = parsed.content["html"]
        assert html and sanitize_html(html) == html, html
        assert not re.search(r"<(script|style|iframe|img|svg|math|object|embed)\b|<[^>]*\son\w+\s*=", html, re.I), html
        for link in re.findall(r"<a\b[^>]*\bhref=\"([^\"]*)\"", html, re.I):
            scheme = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*):", link)
            assert scheme is None or scheme.group(1).lower() in ("http", "https"), html
        # (sanitising may lengthen it — entities, rel="noopener …" — past the 8,000 a client may send)
        dumped["content"]["html"] = html[:8000] or "x"
    for binary in (False, True):   # what the server took encodes, and is itself a valid frame
        again = parse(decode(encode(dumped, binary)))
        assert type(again) is type(parsed)


def through(data: str | bytes) -> BaseModel | None:
    """decode then parse, as the gateway's reader does: a client frame, or None after a FrameError."""
    try:
        frame = decode(data)
    except FrameError as exc:
        check_error(exc, DECODE_CODES)
        return None
    assert isinstance(frame, dict)
    try:
        parsed = parse(frame)
    except FrameError as exc:
        check_error(exc, PARSE_CODES)
        return None
    check_parsed(parsed)
    return parsed


def as_json(value) -> str:
    return orjson.dumps(value).decode()


def as_msgpack(value) -> bytes:
    return msgpack.packb(value)


# -- decode and parse, in process -------------------------------------------------------------------
def test_every_template_is_a_valid_frame():
    for frame in VALID:
        assert through(as_json(frame)) is not None and through(as_msgpack(frame)) is not None, frame


@fuzz(300)
@given(text=st.text(max_size=200) | st.text(st.characters(codec="utf-8"), max_size=40).map(lambda t: '{"t": "' + t)
       | st.text(st.characters(categories=["Cs", "Co", "Cc"]), max_size=20))
def test_any_text_is_a_frame_or_a_frame_error(text):
    through(text)


@fuzz(300)
@given(data=st.binary(max_size=300))
def test_any_bytes_are_a_frame_or_a_frame_error(data):
    through(data)


@fuzz(300)
@given(value=JSON_VALUES, t=st.sampled_from(TYPES) | st.text(max_size=10) | JSON_SCALARS)
def test_any_json_is_a_frame_or_a_frame_error(value, t):
    through(as_json(value))
    if isinstance(value, dict):
        through(as_json({**value, "t": t}))


@fuzz(300)
@given(value=MSGPACK_VALUES, t=st.sampled_from(TYPES) | st.binary(max_size=6))
def test_any_msgpack_is_a_frame_or_a_frame_error(value, t):
    through(as_msgpack(value))
    if isinstance(value, dict):
        through(as_msgpack({**value, "t": t}))


@fuzz(600)
@given(frame=mutated_frames(), binary=st.booleans())
def test_mutated_frames_are_taken_or_refused_with_a_frame_error(frame, binary):
    through(as_msgpack(frame) if binary else as_json(frame))


@fuzz(200)
@given(frame=mutated_frames(MSGPACK_VALUES))
def test_mutated_msgpack_frames_with_bytes_and_extension_types(frame):
    through(as_msgpack(frame))


@fuzz(200)
@given(html=st.text(max_size=300) | st.lists(st.sampled_from([
    "<script>", "</script>", "<a href='javascript:x'>", "<img src=x onerror=alert(1)>", "<p>", "</p>", "<b>",
    "<style>", "<!--", "-->", "<![CDATA[", "]]>", "<svg/onload=alert(1)>", "&lt;", "<a href=https://x>", "x", "长",
    "<iframe src=//x>", "<math><mi xlink:href=javascript:x>", '"', "'", "<", ">"]), max_size=30).map("".join))
def test_rich_text_always_comes_out_without_scripts(html):
    frame = {"t": "msg", "cid": "r-1", "session": S, "kind": "rich", "content": {"html": html}}
    through(as_json(frame))


@pytest.mark.parametrize("html", ["<script>alert(1)</script>", "<style>p{}</style>", "<iframe src=//x></iframe>"])
def test_rich_text_that_is_only_unsafe_markup_is_refused(html):
    """Regression: it passed as a rich message of empty html (the length was checked before sanitising)."""
    with pytest.raises(FrameError) as caught:
        parse({"t": "msg", "cid": "r-1", "session": S, "kind": "rich", "content": {"html": html}})
    assert caught.value.code == "invalid_frame" and caught.value.ref == "r-1"
    assert caught.value.message.startswith("content.html: ")


@pytest.mark.parametrize("data", [
    '"' + "长" * 30_000 + '"',                                           # 30,000 characters, 90,000 bytes
    as_json({"t": "note", "cid": "n", "session": S, "text": "é" * 40_000}),   # 80,000 bytes in UTF-8
    "x" * (MAX_FRAME_BYTES + 1),
    b"\x00" * (MAX_FRAME_BYTES + 1),
])
def test_a_frame_over_64_kib_in_utf8_is_too_large(data):
    """Regression: the limit was counted in characters for text frames, so 64 Ki CJK characters
    (192 KiB) went through; docs/protocol.md says bytes."""
    with pytest.raises(FrameError) as caught:
        decode(data)
    assert caught.value.code == "frame_too_large"


def test_a_frame_of_exactly_64_kib_is_read():
    text = as_json({"t": "ping", "pad": ""})
    exact = text.replace('""', '"' + "长" * ((MAX_FRAME_BYTES - len(text.encode())) // 3) + '"')
    exact += " " * (MAX_FRAME_BYTES - len(exact.encode()))
    assert len(exact.encode()) == MAX_FRAME_BYTES
    assert decode(exact)["t"] == "ping"


def test_an_unexpected_websocket_error_gets_through_the_error_handlers():
    """Regression (found by this fuzz, in the gateway's log): the HTTP error handler read
    `request.path`, which a websocket has not: handling a websocket's error raised anew."""
    app = Quart(__name__)

    @app.websocket("/ws")
    async def broken():
        raise TypeError("a bug")
    errors.install(app)

    async def main():
        async with app.test_client().websocket("/ws") as ws:
            await ws.receive()
    with pytest.raises(WebsocketResponseError) as refused:
        asyncio.run(asyncio.wait_for(main(), 10))
    response = refused.value.response
    assert response.status_code == 500
    assert set(orjson.loads(asyncio.run(response.get_data()))) == {"error", "message", "field", "details"}


# -- over a real websocket ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    # rate limit out of the way: the fuzz sends a ping after each frame, faster than 20 a second
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("gwfz"), "pd-test-gwfz", "gwfz:", frames_per_s=2000)
    yield p
    p.stop()


WIRE_FRAMES = st.one_of(
    mutated_frames().map(as_json),
    mutated_frames(MSGPACK_VALUES).map(as_msgpack),
    st.sampled_from(VALID).map(as_json),
    JSON_VALUES.map(as_json),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.integers(MAX_FRAME_BYTES - 64, 3 * MAX_FRAME_BYTES).map(lambda n: as_json({"t": "note", "text": "长" * (n // 3)})),
)


async def exchange(client, frame) -> list[dict]:
    """Send one frame, then a ping; everything the server says until its pong."""
    await client.send_raw(frame)
    await client.send({"t": "ping"})
    said = []
    with trio.fail_after(10):
        while True:
            answer = await client.recv()
            assert isinstance(answer, dict) and isinstance(answer.get("t"), str), answer
            if answer["t"] == "pong":
                return said
            said.append(answer)


@fuzz(12)
@given(who=st.sampled_from(["visitor", "owner"]), binary=st.booleans(),
       frames=st.lists(WIRE_FRAMES, min_size=20, max_size=30))
def test_fuzzed_frames_over_a_websocket_get_documented_answers_and_the_connection_lives(pd, who, binary, frames):
    async def main():
        token = pd.owner_token if who == "owner" else pd.visitor_token()
        async with connected(pd.url, token, binary=binary) as client:
            for frame in frames:
                for answer in await exchange(client, frame):
                    if answer["t"] == "error":
                        assert answer["code"] in DOCUMENTED_CODES and answer["message"], answer
    trio.run(main)


def test_an_empty_binary_frame_is_invalid_msgpack_and_the_connection_lives(pd):
    """Regression (found by this fuzz): Quart hands an empty binary message over as None, which
    crashed the connection's reader (close 1011) — before the hello, and after it."""
    async def main():
        async with connected(pd.url, pd.visitor_token(), binary=True) as client:
            await client.send_raw(b"")
            error = await client.until("error")
            assert error["code"] == "invalid_msgpack" and error["message"], error
            await client.send({"t": "ping"})
            await client.until("pong")
        async with trio_websocket.open_websocket_url(pd.url) as ws:
            await ws.send_message(b"")
            assert msgpack.unpackb(await ws.get_message())["code"] == "invalid_msgpack"
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                with trio.fail_after(10):
                    await ws.get_message()
            assert closed.value.reason.code == 4401
    trio.run(main)


def test_after_the_fuzz_the_gateway_still_serves(pd):
    async def main():
        async with connected(pd.url, pd.visitor_token()) as bystander:
            await bystander.send({"t": "ping"})
            await bystander.until("pong")
    trio.run(main)
