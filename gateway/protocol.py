"""The websocket protocol, server side: decoding and validating client frames, encoding server
frames, close codes. The contract is docs/protocol.md; this module is its executable half."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

import msgpack
import nh3
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from .errors import validation_details

MAX_FRAME_BYTES = 64 * 1024

# Close codes: 4000-4099 mean "reconnect"; 4400-4499 mean "fix something first".
CLOSE_GOING_AWAY = 4000
CLOSE_SLOW = 4001
CLOSE_OVERLOADED = 4002
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TIMEOUT = 4408
CLOSE_FLOODING = 4429


class FrameError(Exception):
    """A client frame the server refuses; answered with an `error` frame, the connection lives."""

    def __init__(self, code: str, message: str, ref: Any = None, retry_after_s: int | None = None):
        super().__init__(message)
        self.code, self.message, self.ref, self.retry_after_s = code, message, ref, retry_after_s

    def frame(self) -> dict:
        frame = {"t": "error", "code": self.code, "message": self.message, "ref": self.ref}
        if self.retry_after_s is not None:   # a limit: the same frame is taken again after this long
            frame["retry_after_s"] = self.retry_after_s
        return frame


# -- encoding --------------------------------------------------------------------------------
def decode(data: str | bytes) -> dict:
    """Text frames are JSON, binary frames msgpack."""
    size = len(data)
    if isinstance(data, str) and size > MAX_FRAME_BYTES // 4:   # bytes, not characters: UTF-8 takes up to 4
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise FrameError("frame_too_large", f"frames are at most {MAX_FRAME_BYTES} bytes, got {size}")
    try:
        frame = orjson.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (orjson.JSONDecodeError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        code = "invalid_json" if isinstance(data, str) else "invalid_msgpack"
        raise FrameError(code, f"frame is not valid {'JSON' if isinstance(data, str) else 'msgpack'}: {exc}") from None
    if not isinstance(frame, dict):
        raise FrameError("invalid_frame", f"a frame is a map with a type 't', got {type(frame).__name__}")
    return frame


def encode(frame: dict, binary: bool) -> str | bytes:
    return msgpack.packb(frame) if binary else orjson.dumps(frame).decode()


# -- client frames ----------------------------------------------------------------------------
def _line(max_len: int, min_len: int = 1):
    return Annotated[str, StringConstraints(min_length=min_len, max_length=max_len, pattern=r"^[^\x00-\x1f\x7f]*$")]


SessionId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Cid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
HttpUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s]+$")]
Money = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,2})?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ComparisonRow(Strict):
    name: _line(100)
    a: _line(300, 0)
    b: _line(300, 0)


class Comparison(Strict):
    """Two products side by side (an agent's comparison from the console's panel)."""
    products: Annotated[list["ProductContent"], Field(min_length=2, max_length=2)]
    rows: Annotated[list[ComparisonRow], Field(min_length=1, max_length=60)]


class TextContent(Strict):
    text: Text
    choice: Optional[_line(64)] = None   # the id of a knowledge-base entry the bot offered, picked
    comparison: Optional[Comparison] = None   # the text then holds the same table, for channels without tables


class RichContent(Strict):
    html: Annotated[str, StringConstraints(min_length=1, max_length=8000)]


class EmojiContent(Strict):
    emoji: _line(16)


class AttachmentContent(Strict):
    attachment_id: Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{32}$")]
    name: _line(255)
    mime: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[A-Za-z0-9.+-]{1,100}$")]
    size: Annotated[int, Field(ge=0, le=100 * 1024 * 1024)]


class ProductContent(Strict):
    product_id: _line(64)
    title: _line(200)
    price: Optional[Money] = None
    currency: Optional[Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]] = None
    image_url: Optional[HttpUrl] = None
    url: Optional[HttpUrl] = None


class OrderItem(Strict):
    title: _line(200)
    qty: Annotated[int, Field(ge=1, le=100000)] = 1


class OrderContent(Strict):
    order_id: _line(64)
    status: _line(32)
    total: Optional[Money] = None
    currency: Optional[Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]] = None
    items: Annotated[list[OrderItem], Field(max_length=50)] = []


Comparison.model_rebuild()
CONTENT = {"text": TextContent, "rich": RichContent, "emoji": EmojiContent, "image": AttachmentContent,
           "audio": AttachmentContent, "video": AttachmentContent, "file": AttachmentContent,
           "product": ProductContent, "order": OrderContent}
_MIME_PREFIX = {"image": "image/", "audio": "audio/", "video": "video/"}


class Hello(Strict):
    t: Literal["hello"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    resume: Annotated[dict[SessionId, Annotated[int, Field(ge=0)]], Field(max_length=100)] = {}


class Open(Strict):
    t: Literal["open"]
    id: Optional[Cid] = None
    group: Optional[SessionId] = None
    channel: Literal["web"] = "web"
    issue_type: Optional[_line(64)] = None
    entry: Optional[dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")], _line(2048, 0)]] = None


class Subscribe(Strict):
    t: Literal["subscribe"]
    session: SessionId
    after: Annotated[int, Field(ge=0)] = 0


class Msg(Strict):
    t: Literal["msg"]
    cid: Cid
    session: SessionId
    kind: Literal["text", "rich", "emoji", "image", "audio", "video", "file", "product", "order"]
    content: dict


class Typing(Strict):
    t: Literal["typing"]
    session: SessionId
    on: bool


class Read(Strict):
    t: Literal["read"]
    session: SessionId
    seq: Annotated[int, Field(ge=1)]


class Ping(Strict):
    t: Literal["ping"]


# -- conversation lifecycle and collaboration (docs/protocol.md "Routing and collaboration") -----
AgentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Note = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]


class Status(Strict):
    t: Literal["status"]
    status: Literal["online", "busy", "away", "offline"]


class Close(Strict):
    t: Literal["close"]
    session: SessionId


class Csat(Strict):
    t: Literal["csat"]
    session: SessionId
    score: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")] = ""


class Transfer(Strict):
    t: Literal["transfer"]
    session: SessionId
    to_agent: Optional[AgentId] = None
    to_group: Optional[SessionId] = None
    note: Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")] = ""

    @model_validator(mode="after")
    def _one_target(self) -> "Transfer":
        if (self.to_agent is None) == (self.to_group is None):
            raise ValueError("give exactly one of to_agent and to_group")
        return self


class NoteFrame(Strict):
    t: Literal["note"]
    cid: Cid
    session: SessionId
    text: Note


class Pick(Strict):
    t: Literal["pick"]
    session: SessionId
    group: SessionId


class Takeover(Strict):
    t: Literal["takeover"]
    session: SessionId


class Chat(Strict):
    """Agent-to-agent: to one colleague or to a group."""
    t: Literal["chat"]
    cid: Cid
    to_agent: Optional[AgentId] = None
    group: Optional[SessionId] = None
    text: Note

    @model_validator(mode="after")
    def _one_target(self) -> "Chat":
        if (self.to_agent is None) == (self.group is None):
            raise ValueError("give exactly one of to_agent and group")
        return self


class Monitor(Strict):
    """Supervisors: the live picture (`live` frames every 2 s) and alerts, on or off."""
    t: Literal["monitor"]
    on: bool = True


ClientFrame = Annotated[Union[Hello, Open, Subscribe, Msg, Typing, Read, Ping, Status, Close, Csat, Transfer,
                              NoteFrame, Pick, Takeover, Chat, Monitor], Field(discriminator="t")]
_FRAMES = TypeAdapter(ClientFrame)
TYPES = ("hello", "open", "subscribe", "msg", "typing", "read", "ping", "status", "close", "csat", "transfer",
         "note", "pick", "takeover", "chat", "monitor")


def parse(frame: dict) -> BaseModel:
    """A validated client frame; FrameError naming the first bad field otherwise."""
    ref = frame.get("cid") or frame.get("id")
    ref = ref if isinstance(ref, (str, int)) else None
    if frame.get("t") not in TYPES:
        raise FrameError("unknown_type", f"t must be one of {', '.join(TYPES)}, got {frame.get('t')!r}", ref)
    try:
        parsed = _FRAMES.validate_python(frame)
    except ValidationError as exc:
        d = validation_details(exc)[0]
        raise FrameError("invalid_frame", f"{d['field']}: {d['reason']}", ref) from None
    if isinstance(parsed, Msg):
        parsed.content = _content(parsed, ref)
    return parsed


def _content(m: Msg, ref: Any) -> dict:
    try:
        content = CONTENT[m.kind].model_validate(m.content).model_dump(exclude_none=True)
    except ValidationError as exc:
        d = validation_details(exc)[0]
        raise FrameError("invalid_frame", f"content.{d['field']}: {d['reason']}", ref) from None
    if m.kind in _MIME_PREFIX and not content["mime"].startswith(_MIME_PREFIX[m.kind]):
        raise FrameError("invalid_frame", f"content.mime: a {m.kind} needs {_MIME_PREFIX[m.kind]}*", ref)
    if m.kind == "rich":
        content["html"] = sanitize_html(content["html"])
        if not content["html"]:
            raise FrameError("invalid_frame", "content.html: nothing is left once unsafe markup is removed", ref)
    return content


_RICH_TAGS = {"b", "i", "u", "s", "em", "strong", "br", "p", "ul", "ol", "li", "code", "pre", "blockquote", "a"}


def sanitize_html(html: str) -> str:
    """The safe subset: no scripts, styles, event handlers or non-http(s) links."""
    return nh3.clean(html, tags=_RICH_TAGS, attributes={"a": {"href"}}, url_schemes={"http", "https"},
                     link_rel="noopener noreferrer nofollow")


CONTROL = re.compile(r"[\x00-\x1f\x7f]")
