"""The connector interface: how a platform (WeChat, WeCom, WhatsApp, email, any webhook) becomes
a channel of peakdesk. A connector is a plugin (entry point group `peakdesk.connectors`,
connectors/registry.py); it knows one platform's protocol and nothing of peakdesk's actors.

Inbound: the gateway hands a platform's HTTP callback to `webhook()` as a `WebhookRequest`;
the connector checks its signature (refusing a forged or malformed one with `Refused`, which
the gateway logs and answers 4xx, storing nothing), decrypts and parses it into `Inbound`
messages and delivery `Receipt`s, and says what to answer the platform (a verification
challenge, "success", an empty 200). Platforms that are pulled rather than pushed (IMAP mail)
implement `poll()`.

Outbound: a worker off the actor hosts calls `send()` with an `Outbound` message; the connector
speaks the platform's send API and returns the platform's message id, or raises `SendFailed`
(`retry=True`: try again later; False: never, e.g. WhatsApp's 24-hour window closed).

Message content follows docs/protocol.md's kinds: `text` {"text"}, `image`/`audio`/`video`/`file`
{"name", "mime", "size", "attachment_id"} once the media is stored — connectors download media
through `Media.store` and upload an agent's through `Media.read` — `location`-like
platform messages arrive as text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel


@dataclass(frozen=True)
class WebhookRequest:
    method: str                      # GET (verification) or POST
    path: str
    query: dict[str, str]
    headers: dict[str, str]          # names lower-cased
    body: bytes


@dataclass(frozen=True)
class Inbound:
    """One customer message from the platform."""
    external_id: str                 # the platform's id of the customer (openid, wa_id, external_userid, address)
    message_id: str                  # the platform's id of the message: a repeat (the platform's retry) is dropped
    kind: str                        # a protocol message kind: text, image, audio, video, file
    content: dict                    # that kind's content (docs/protocol.md)
    name: str = ""                   # the customer's display name, if the platform tells
    thread: str = ""                 # a conversation key within the customer (an email thread); "" = one per customer
    at_ms: int = 0                   # when the platform says it was sent
    reply_to: dict = field(default_factory=dict)   # what `send` needs to answer it (an email's Message-ID, a WeCom open_kfid)


@dataclass(frozen=True)
class Receipt:
    """What the platform says about a message we sent."""
    message_id: str                  # the platform's id, as `send` returned it
    status: str                      # sent | delivered | read | failed
    error: str = ""


@dataclass(frozen=True)
class WebhookResult:
    inbound: list[Inbound] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    status: int = 200
    body: bytes = b"success"
    content_type: str = "text/plain; charset=utf-8"
    # channel state to save once every message above is committed (a pulled platform's cursor):
    # saved earlier, a crash in between would skip those messages; saved after, they are re-read
    state_updates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outbound:
    """A message from an agent or the bot to a customer on the platform."""
    external_id: str
    kind: str
    content: dict
    key: str                         # peakdesk's unique id of this message (merchant/session/seq): dedupe on retries
    thread: str = ""
    reply_to: dict = field(default_factory=dict)    # from the customer's latest Inbound of this conversation
    last_inbound_ms: int = 0         # when the customer last wrote (the 24-hour window rules)


TEXT_MAX = 4000                  # docs/protocol.md: a text is 1-4,000 characters ...
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")   # ... with no control characters but \t and \n
EMPTY_TEXT = "[空消息 empty message]"


def protocol_text(text: str) -> str:
    """A platform's text as a protocol text may be: line breaks as \n, no other control
    characters, never empty. (A platform's message is cleaned: it can't be refused as a client's
    frame is, the platform would only send it again.)"""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")) or EMPTY_TEXT


def text_parts(text: str) -> list[str]:
    """`protocol_text` in parts of at most TEXT_MAX characters: one Inbound each."""
    text = protocol_text(text)
    return [text[i:i + TEXT_MAX] for i in range(0, len(text), TEXT_MAX)]


class Refused(Exception):
    """A webhook that is forged or malformed: `reason` names what is wrong (it is logged);
    `status` is what the platform is answered (403 for a bad signature, 400 for a bad body)."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason, self.status = reason, status


class SendFailed(Exception):
    """The platform did not take the message. `retry`: worth trying again later."""

    def __init__(self, reason: str, retry: bool = True):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


class Media(Protocol):
    """Attachments, for connectors that move media (the merchant's attachment store)."""

    async def store(self, name: str, mime: str, data: bytes) -> dict: ...     # -> attachment content
    async def read(self, attachment_id: str) -> tuple[dict, bytes]: ...       # -> (meta, bytes)


class State(Protocol):
    """A channel's own durable strings (connectors/support.py ChannelState): cursors, tokens."""

    async def get(self, name: str) -> str | None: ...
    async def set(self, name: str, value: str) -> None: ...


@runtime_checkable
class Connector(Protocol):
    """A platform. `Config` validates a channel's settings and credentials (a pydantic model
    whose errors name the field); the gateway builds one connector per channel."""

    name: ClassVar[str]              # "wechat_oa", "wecom_kf", "whatsapp", "email", "webhook", ...
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: Any, http: httpx.AsyncClient, media: Media | None = None,
                 state: "State | None" = None) -> None: ...

    async def webhook(self, request: WebhookRequest) -> WebhookResult: ...

    async def send(self, message: Outbound) -> str: ...

    # Optional, for platforms that are pulled (IMAP): new messages since `cursor` ("" the first
    # time) and the cursor to give next time. The gateways call it every few seconds, one at a time
    # per channel; the cursor is saved once every message is committed. Receipts found while
    # polling (bounces) are collected with `take_receipts()` right after.
    # async def poll(self, cursor: str) -> tuple[list[Inbound], str]: ...
    # def take_receipts(self) -> list[Receipt]: ...
