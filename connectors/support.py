"""What connectors get from peakdesk besides HTTP: the merchant's attachment store for media
(`MerchantMedia`), and a small durable key-value state per channel (`ChannelState`: cursors such
as WeCom's sync_msg `next_cursor` or IMAP's last UID, cached access tokens) kept in Redis."""
from __future__ import annotations

from redis.asyncio import Redis

from storage.attachments import AttachmentStore


class MerchantMedia:
    """`connectors.base.Media` over the merchant's attachment store: what a connector downloads
    becomes an attachment content (docs/protocol.md); what an agent sent is read back to upload."""

    def __init__(self, attachments: AttachmentStore, merchant: str):
        self.attachments, self.merchant = attachments, merchant

    async def store(self, name: str, mime: str, data: bytes) -> dict:
        meta = await self.attachments.put(self.merchant, name, mime, data)
        return {k: meta[k] for k in ("attachment_id", "name", "mime", "size")}

    async def read(self, attachment_id: str) -> tuple[dict, bytes]:
        return await self.attachments.get(self.merchant, attachment_id)


class ChannelState:
    """Strings by name for one channel of one merchant: `{p}m:{m}:channel:{id}:state` (a hash)."""

    def __init__(self, redis: Redis, prefix: str, merchant: str, channel_id: str):
        self.r, self.key = redis, f"{prefix}m:{merchant}:channel:{channel_id}:state"

    async def get(self, name: str) -> str | None:
        raw = await self.r.hget(self.key, name)
        return raw.decode() if raw is not None else None

    async def set(self, name: str, value: str) -> None:
        await self.r.hset(self.key, name, value)
