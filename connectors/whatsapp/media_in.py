"""Media a customer sent: looked up (GET /{media-id} → a short-lived URL), downloaded with the
token, checked against its SHA-256, and only when every file of the notification is in hand,
stored — so a notification that fails half-way leaves nothing behind.

A failure that passes (network, timeout, WhatsApp busy, a corrupt download) raises `GraphError`
with retry=True: the notification is answered 503 and WhatsApp sends it again. One that won't
(the media is gone, too large, a type the attachment store refuses) becomes a text telling the
agent what the customer sent and why it isn't there.
"""
from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import re

from connectors.base import Inbound, Media
from .errors import GraphError
from .graph import Graph
from .inbound import Pending
from .models import digest_of

MAX_BYTES = 20 * 1024 * 1024        # the attachment store's limit (docs/protocol.md "Attachments")
PARALLEL = 4
LABEL = {"image": "图片 image", "audio": "语音 audio", "video": "视频 video", "file": "文件 file"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


class MediaFetcher:
    def __init__(self, graph: Graph, media: Media | None, budget_s: float):
        self.graph, self.media, self.budget_s = graph, media, budget_s
        self.slots = asyncio.Semaphore(PARALLEL)

    async def resolve(self, items: list[Inbound | Pending]) -> list[Inbound]:
        pending = [item for item in items if isinstance(item, Pending)]
        fetched = iter(await self._fetch_all(pending))
        out = []
        for item in items:
            out.append(item if isinstance(item, Inbound) else await self._store(item, next(fetched)))
        return out

    async def _fetch_all(self, pending: list[Pending]) -> list[tuple[str, bytes] | str]:
        if not pending:
            return []
        try:
            async with asyncio.timeout(self.budget_s):
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._fetch(p)) for p in pending]
        except TimeoutError:
            raise GraphError(f"media: not all downloaded within {self.budget_s:g} s", True) from None
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _fetch(self, item: Pending) -> tuple[str, bytes] | str:
        """(mime, bytes), or why it can't be had (a str)."""
        if self.media is None:
            return "this channel keeps no media"
        async with self.slots:
            try:
                info = await self.graph.media_info(item.ref.id)
                size = info.get("file_size")
                if isinstance(size, int) and size > MAX_BYTES:
                    return f"{size} bytes, over the {MAX_BYTES // (1024 * 1024)} MiB limit"
                data = await self.graph.download(info["url"], MAX_BYTES)
            except GraphError as exc:
                if exc.retry:
                    raise
                return exc.reason
        _check_digest(item, data, info.get("sha256"))
        told = info.get("mime_type")     # the platform's answer: any JSON, not necessarily a string
        return _mime(told if isinstance(told, str) and told else item.ref.mime_type), data

    async def _store(self, item: Pending, got: tuple[str, bytes] | str) -> Inbound:
        name = _name(item, got[0] if isinstance(got, tuple) else item.ref.mime_type)
        if isinstance(got, tuple):
            try:
                content = await self.media.store(name, got[0], got[1])
                return Inbound(message_id=item.message_id, kind=item.kind, content=content, **item.fields)
            except ValueError as refused:         # the attachment store's limits (type, size, content)
                got = str(refused)
        note = f"[{LABEL[item.kind]} “{name}” 未能保存 could not be kept: {got}]"
        return Inbound(message_id=item.message_id, kind="text", content={"text": note[:4000]}, **item.fields)


def _check_digest(item: Pending, data: bytes, told: object) -> None:
    actual = hashlib.sha256(data).digest()
    for claimed in (item.ref.sha256, told if isinstance(told, str) else None):
        expected = digest_of(claimed) if claimed else None
        if expected is not None and expected != actual:
            raise GraphError(f"media {item.ref.id}: the download does not match its SHA-256", True)


def _mime(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()       # "audio/ogg; codecs=opus" → "audio/ogg"


def _name(item: Pending, mime: str) -> str:
    if item.ref.filename and _UNSAFE.sub("", item.ref.filename).strip(" ."):
        return _UNSAFE.sub("_", item.ref.filename).strip()[:255]
    extension = mimetypes.guess_extension(_mime(mime)) or ""
    return f"whatsapp-{item.kind}-{item.ref.id[:64]}{extension}"
