"""Attachments over HTTP: upload before sending an image/audio/video/file message, download
to show it. Any authenticated customer or person of the merchant may do both."""
from __future__ import annotations

from quart import Blueprint, Response, request

from storage.attachments import MAX_BYTES, AttachmentRefused

from . import limits
from .context import current_principal, services
from .errors import ApiError

attachments_api = Blueprint("attachments", __name__, url_prefix="/api/v1/attachments")


@attachments_api.post("")
async def upload():
    """Body: the file's bytes; `Content-Type`: its type; `?name=`: its file name."""
    who = await current_principal()
    records = services().records
    uploads = limits.upload_key(records.p, who.merchant, f"{who.kind}:{who.id}")
    await limits.check(records.r, uploads, limits.UPLOADS, "uploads")
    await limits.count(records.r, uploads, limits.UPLOAD_WINDOW_S)
    name = request.args.get("name", "")
    mime = (request.mimetype or "").lower()
    if request.content_length is not None and request.content_length > MAX_BYTES:
        raise ApiError(413, "too_large", f"size: at most {MAX_BYTES} bytes", "size")
    data = await request.get_data()
    try:
        meta = await services().attachments.put(who.merchant, name, mime, data)
    except AttachmentRefused as exc:
        field = str(exc).split(":", 1)[0]
        raise ApiError(413 if field == "size" and data else 422, "invalid_field", str(exc), field) from None
    return {**meta, "url": f"/api/v1/attachments/{meta['attachment_id']}"}, 201


@attachments_api.get("/<attachment_id>")
async def download(attachment_id: str):
    who = await current_principal()
    try:
        meta, data = await services().attachments.get(who.merchant, attachment_id)
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    inline = meta["mime"].startswith(("image/", "audio/", "video/"))
    disposition = "inline" if inline else "attachment"
    return Response(data, content_type=meta["mime"], headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{_quote(meta['name'])}",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=86400"})


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
