"""What connectors get from peakdesk besides HTTP: the merchant's attachment store for media
(`MerchantMedia`), and a small durable key-value state per channel (`ChannelState`: cursors such
as WeCom's sync_msg `next_cursor` or IMAP's last UID, cached access tokens) kept in Redis."""
from __future__ import annotations

from redis.asyncio import Redis

from storage import crypto
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
    """Strings by name for one channel of one merchant: `{p}m:{m}:channel:{id}:state` (a hash).
    Names are the connector's own (never a customer's id); values are sealed with the merchant's
    data key (storage/crypto.py: access tokens are secrets) and read as unset once it is shredded."""

    def __init__(self, redis: Redis, prefix: str, merchant: str, channel_id: str):
        self.r, self.key = redis, f"{prefix}m:{merchant}:channel:{channel_id}:state"
        self.ring, self.merchant = crypto.keyring(redis, prefix), merchant

    async def get(self, name: str) -> str | None:
        raw = await self.r.hget(self.key, name)
        try:
            return self.ring.open(self.merchant, raw).decode() if raw is not None else None
        except crypto.Shredded:
            return None

    async def set(self, name: str, value: str) -> None:
        await self.r.hset(self.key, name, self.ring.seal(self.merchant, value.encode()))
