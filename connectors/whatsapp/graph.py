"""The few Graph API calls a WhatsApp channel makes: send a message, upload media, look a media
id up and download it. Every call carries the token as a Bearer and `appsecret_proof` (so the
app's "Require app secret" setting works); failures come back as `GraphError` (a `SendFailed`)
with `retry` set by the error code."""
from __future__ import annotations

import hashlib
import hmac

import httpx

from . import errors
from .config import WhatsAppConfig
from .errors import GraphError
from .tokens import Tokens

# Media URLs are Meta's CDN; the Bearer token is sent to no other host (but the API's own).
MEDIA_DOMAINS = ("fbsbx.com", "facebook.com", "fbcdn.net", "whatsapp.net")


class Graph:
    def __init__(self, config: WhatsAppConfig, http: httpx.AsyncClient, tokens: Tokens):
        self.config, self.http, self.tokens = config, http, tokens

    async def send_message(self, payload: dict) -> str:
        url = self.config.url(self.config.phone_number_id, "messages")
        messages = _json(await self._call("POST", url, json=payload)).get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise GraphError("WhatsApp accepted the message but its answer has no message id", False)
        return wamid

    async def upload(self, data: bytes, mime: str, name: str) -> str:
        form = {"messaging_product": "whatsapp", "type": mime}
        resp = await self._call("POST", self.config.url(self.config.phone_number_id, "media"),
                                data=form, files={"file": (name, data, mime)})
        media_id = _json(resp).get("id")
        if not isinstance(media_id, str) or not media_id:
            raise GraphError("WhatsApp took the upload but its answer has no media id", True)
        return media_id

    async def media_info(self, media_id: str) -> dict:
        """{"url", "mime_type", "sha256", "file_size"} of a media id a customer sent."""
        info = _json(await self._call("GET", self.config.url(media_id)))
        if not isinstance(info.get("url"), str):
            raise GraphError(f"media {media_id}: the answer has no download url", False)
        return info

    async def download(self, url: str, limit: int) -> bytes:
        if not self._trusted(url):
            raise GraphError(f"media url {url[:100]!r} is not Meta's: not fetched", False)   # (maybe no URL at all)
        token = await self.tokens.get()
        try:
            # httpx drops the Authorization header if a redirect leaves the host
            async with self.http.stream("GET", url, headers={"Authorization": f"Bearer {token}"},
                                        timeout=self.config.timeout_s, follow_redirects=True) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise errors.from_response(resp)
                return await _read_capped(resp, limit)
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, self.config.timeout_s) from None

    async def _call(self, method: str, url: str, **kwargs) -> httpx.Response:
        for attempt in (1, 2):
            token = await self.tokens.get()
            resp = await self._request(method, url, token, **kwargs)
            if resp.status_code == 200:
                return resp
            error = errors.from_response(resp)
            if not (error.code == 190 and attempt == 1 and await self.tokens.rejected(token)):
                raise error
        raise AssertionError("unreachable")

    async def _request(self, method: str, url: str, token: str, **kwargs) -> httpx.Response:
        proof = hmac.new(self.config.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        try:
            return await self.http.request(method, url, params={"appsecret_proof": proof},
                                           headers={"Authorization": f"Bearer {token}"},
                                           timeout=self.config.timeout_s, **kwargs)
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, self.config.timeout_s) from None

    def _trusted(self, url: str) -> bool:
        try:
            target, api = httpx.URL(url), httpx.URL(self.config.api_base)
        except httpx.InvalidURL:
            return False
        if (target.scheme, target.host, target.port) == (api.scheme, api.host, api.port):
            return True
        host = target.host
        return target.scheme == "https" and any(host == d or host.endswith("." + d) for d in MEDIA_DOMAINS)


async def _read_capped(resp: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise GraphError(f"media: over {limit // (1024 * 1024)} MiB", False)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except (ValueError, RecursionError):     # RecursionError: JSON nested past the parser's limit
        raise GraphError("WhatsApp answered 200 with a body that is not JSON", True) from None
    return body if isinstance(body, dict) else {}
