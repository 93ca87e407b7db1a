"""Attachments in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Alibaba OSS, SeaweedFS).

One object per attachment, key `<prefix>/<merchant>/<attachment id>`: the bytes are the body,
the type is its Content-Type, the file name is user metadata (percent-encoded: S3 metadata
travels in HTTP headers, which only carry ASCII). One PUT writes bytes and metadata together,
so a reader never sees one without the other.

boto3 is synchronous; every call runs in a worker thread (asyncio.to_thread) because the store
is used inside the gateway's event loop, where a blocking call would stall every connection.
"""
from __future__ import annotations

import asyncio
import uuid
from urllib.parse import quote, unquote

from .attachments import ALLOWED, AttachmentRefused, check, is_attachment_id, is_merchant_id

# Codes an S3-compatible store answers for a key that is not there. Anything else (AccessDenied,
# a network error) is an outage or a misconfiguration and is raised as it is, not hidden as 404.
_MISSING = {"NoSuchKey", "404", "NotFound"}


def make_client(endpoint_url: str | None = None, region: str | None = None, access_key_id: str | None = None,
                secret_access_key: str | None = None, session_token: str | None = None):
    """A boto3 S3 client. Credentials left as None come from boto3's own chain (AWS_* variables,
    ~/.aws, an instance or pod role). Building it does no network I/O."""
    import boto3
    from botocore.config import Config

    config = Config(
        # MinIO & co. are usually reached by IP or one host name, without wildcard DNS for buckets.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # botocore >= 1.36 adds CRC checksums to every upload by default; several S3-compatible
        # stores (older MinIO, Ceph, OSS) refuse those requests. Send them only when S3 demands.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
                        aws_secret_access_key=secret_access_key, aws_session_token=session_token, config=config)


class S3AttachmentStore:
    """The AttachmentStore contract (storage/attachments.py) on an existing bucket."""

    def __init__(self, bucket: str, prefix: str = "", *, client=None, **client_options):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else make_client(**client_options)

    def key(self, merchant: str, attachment_id: str) -> str:
        # Both parts are checked by the callers against patterns without "/" or "..", so a key
        # can only ever name an object directly inside its merchant's folder.
        return "/".join(p for p in (self.prefix, merchant, attachment_id) if p)

    async def put(self, merchant: str, name: str, mime: str, data: bytes) -> dict:
        check(name, mime, data)
        if not is_merchant_id(merchant):
            raise AttachmentRefused(f"merchant: {merchant!r} is not a merchant id")
        meta = {"attachment_id": uuid.uuid4().hex, "name": name, "mime": mime, "size": len(data)}
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket,
                                Key=self.key(merchant, meta["attachment_id"]), Body=data, ContentType=mime,
                                Metadata={"name": quote(name, safe="")})
        return meta

    async def put_blob(self, merchant: str, attachment_id: str, blob: bytes) -> None:
        """An opaque object (SealedAttachmentStore): no name or type of the file shows in the bucket."""
        if not is_merchant_id(merchant):
            raise AttachmentRefused(f"merchant: {merchant!r} is not a merchant id")
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=self.key(merchant, attachment_id),
                                Body=blob, ContentType="application/octet-stream")

    async def get(self, merchant: str, attachment_id: str) -> tuple[dict, bytes]:
        if not (is_attachment_id(attachment_id) and is_merchant_id(merchant)):
            raise LookupError(f"attachment {attachment_id} not found")
        return await asyncio.to_thread(self._get, merchant, attachment_id)

    def _get(self, merchant: str, attachment_id: str) -> tuple[dict, bytes]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(merchant, attachment_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise LookupError(f"attachment {attachment_id} not found") from None
            raise
        with obj["Body"] as body:
            data = body.read()
        name = unquote(obj.get("Metadata", {}).get("name", attachment_id))
        # The bucket may be written by other tools too: a type peakdesk would not accept (say
        # text/html) is served as opaque bytes, never rendered by the browser on our origin.
        mime = obj.get("ContentType") if obj.get("ContentType") in ALLOWED else "application/octet-stream"
        meta = {"attachment_id": attachment_id, "name": name, "mime": mime, "size": len(data)}
        return meta, data
