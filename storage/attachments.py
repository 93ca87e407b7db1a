"""Attachments (images, audio, video, files sent in conversations): an object store behind a
small interface. The default keeps them in a local directory under the data dir, one folder
per merchant; an S3-compatible store (attachments_s3.py) is the production option for multi-node
clusters. `open_attachment_store(settings)` picks one.

Ids are 128-bit random hex: knowing one is the capability to fetch it within its merchant.
"""
from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgpack
import orjson

if TYPE_CHECKING:
    from actors.settings import Settings

MAX_BYTES = 20 * 1024 * 1024
# What a conversation may carry. Anything else (executables, HTML, SVG with scripts) is refused.
ALLOWED = {
    "image/jpeg", "image/png", "image/gif", "image/webp",
    "audio/mpeg", "audio/ogg", "audio/wav", "audio/webm", "audio/aac", "audio/mp4",
    "audio/amr",                     # WeChat and WeCom voice messages
    "video/mp4", "video/webm", "video/quicktime",
    "application/pdf", "text/plain", "text/csv", "application/zip",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
# Leading bytes a file of the type must have: a client can't pass a program off as a picture.
MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",), "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",), "application/pdf": (b"%PDF-",), "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
    "audio/ogg": (b"OggS",), "audio/wav": (b"RIFF",), "video/webm": (b"\x1a\x45\xdf\xa3",),
    "audio/webm": (b"\x1a\x45\xdf\xa3",), "audio/amr": (b"#!AMR",),
}
_ID = re.compile(r"^[a-f0-9]{32}$")
# The merchant id pattern of gateway/schemas.py: no "/", no "..", so it is always one path segment.
_MERCHANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,255}$")


class AttachmentRefused(ValueError):
    """The upload breaks a limit; the message names the field (`mime`, `size`, `name`)."""


def is_attachment_id(value: str) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


def is_merchant_id(value: str) -> bool:
    return isinstance(value, str) and bool(_MERCHANT.match(value))


def check(name: str, mime: str, data: bytes) -> None:
    if not _NAME.match(name or ""):
        raise AttachmentRefused("name: 1-255 characters, no slashes or control characters")
    if mime not in ALLOWED:
        raise AttachmentRefused(f"mime: {mime!r} is not accepted (images, audio, video, PDF, text, zip, office)")
    if not data:
        raise AttachmentRefused("size: the file is empty")
    if len(data) > MAX_BYTES:
        raise AttachmentRefused(f"size: at most {MAX_BYTES} bytes")
    if mime in MAGIC and not data.startswith(MAGIC[mime]):
        raise AttachmentRefused(f"mime: the content is not {mime}")


class AttachmentStore(Protocol):
    """Contract: `put` stores bytes under a new id of the merchant and returns its metadata;
    `get` returns (metadata, bytes) or raises LookupError — for an id of another merchant too."""

    async def put(self, merchant: str, name: str, mime: str, data: bytes) -> dict: ...

    async def get(self, merchant: str, attachment_id: str) -> tuple[dict, bytes]: ...


class LocalAttachmentStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir(self, merchant: str) -> Path:
        return self.root / merchant

    async def put(self, merchant: str, name: str, mime: str, data: bytes) -> dict:
        check(name, mime, data)
        if not is_merchant_id(merchant):  # it names a folder: "../x" must not reach outside root
            raise AttachmentRefused(f"merchant: {merchant!r} is not a merchant id")
        meta = {"attachment_id": uuid.uuid4().hex, "name": name, "mime": mime, "size": len(data)}
        await asyncio.to_thread(self._write, merchant, meta, data)
        return meta

    def _write(self, merchant: str, meta: dict, data: bytes) -> None:
        folder = self._dir(merchant)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{meta['attachment_id']}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / meta["attachment_id"])  # whole or not at all
        (folder / f"{meta['attachment_id']}.json").write_bytes(orjson.dumps(meta))

    async def get(self, merchant: str, attachment_id: str) -> tuple[dict, bytes]:
        if not (is_attachment_id(attachment_id) and is_merchant_id(merchant)):
            raise LookupError(f"attachment {attachment_id} not found")
        return await asyncio.to_thread(self._read, merchant, attachment_id)

    def _read(self, merchant: str, attachment_id: str) -> tuple[dict, bytes]:
        folder = self._dir(merchant)
        try:
            meta = orjson.loads((folder / f"{attachment_id}.json").read_bytes())
            return meta, (folder / attachment_id).read_bytes()
        except FileNotFoundError:
            raise LookupError(f"attachment {attachment_id} not found") from None

    # -- opaque blobs, for SealedAttachmentStore -------------------------------------------------------
    async def put_blob(self, merchant: str, attachment_id: str, blob: bytes) -> None:
        if not is_merchant_id(merchant):
            raise AttachmentRefused(f"merchant: {merchant!r} is not a merchant id")
        meta = {"attachment_id": attachment_id, "name": attachment_id, "mime": "application/octet-stream",
                "size": len(blob)}
        await asyncio.to_thread(self._write, merchant, meta, blob)



class SealedAttachmentStore:
    """Attachments encrypted at rest (storage/crypto.py): the file, its name and type sealed
    together with the merchant's data key, so the directory or bucket holds nothing readable.
    Ones stored before sealing existed are served as they are."""

    def __init__(self, inner, ring):
        self.inner, self.ring = inner, ring

    async def put(self, merchant: str, name: str, mime: str, data: bytes) -> dict:
        check(name, mime, data)
        if not is_merchant_id(merchant):
            raise AttachmentRefused(f"merchant: {merchant!r} is not a merchant id")
        meta = {"attachment_id": uuid.uuid4().hex, "name": name, "mime": mime, "size": len(data)}
        blob = await asyncio.to_thread(self.ring.seal, merchant, msgpack.packb([meta, data]))
        await self.inner.put_blob(merchant, meta["attachment_id"], blob)
        return meta

    async def get(self, merchant: str, attachment_id: str) -> tuple[dict, bytes]:
        from storage import crypto

        if not (is_attachment_id(attachment_id) and is_merchant_id(merchant)):
            raise LookupError(f"attachment {attachment_id} not found")
        meta, blob = await self.inner.get(merchant, attachment_id)
        if not blob.startswith(crypto.MAGIC):     # stored before sealing existed
            return meta, blob
        try:
            meta, data = msgpack.unpackb(await asyncio.to_thread(self.ring.open, merchant, blob))
        except crypto.Shredded:
            raise LookupError(f"attachment {attachment_id} not found (erased)") from None
        return meta, data


def open_attachment_store(settings: "Settings", redis=None) -> AttachmentStore:
    """The store the settings name: `<data_dir>/attachments` unless attachments_url is s3://;
    sealed with the merchants' keys when given the cluster's `redis` (as every gateway does)."""
    target = settings.attachments_s3
    if target is None:
        store = LocalAttachmentStore(settings.data_dir / "attachments")
    else:
        from .attachments_s3 import S3AttachmentStore  # boto3 is imported only when S3 is configured

        bucket, prefix = target
        store = S3AttachmentStore(bucket, prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                                  access_key_id=settings.s3_access_key_id,
                                  secret_access_key=settings.s3_secret_access_key,
                                  session_token=settings.s3_session_token)
    if redis is None:
        return store
    from storage import crypto

    return SealedAttachmentStore(store, crypto.keyring(redis, settings.prefix))

