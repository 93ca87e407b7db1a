"""The Official Account API (api.weixin.qq.com): the access_token, fetched once and shared by
every gateway through the channel's state (each /cgi-bin/token call makes the previous token
expire within minutes, so nodes must not each fetch their own), and calls that refresh it once
when WeChat says it expired. Every failure is a `SendFailed` whose `retry` says whether trying
again later can help."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from connectors.base import SendFailed, State

EXPIRED = {40001, 40014, 42001}     # invalid credential, invalid access_token, access_token expired
RETRY = {
    -1: "WeChat is busy (-1)",
    45009: "the account's API quota is used up (45009)",
    45011: "API calls too frequent (45011)",
}
NO_RETRY = {
    45015: "the customer has not written within the last 48 hours: WeChat lets an account answer only "
           "within 48 hours of the customer's last message (45015)",
    45047: "too many messages since the customer last wrote: WeChat takes more once the customer writes again (45047)",
    40003: "the recipient is not a follower of this account (invalid openid, 40003)",
    43004: "the customer has unfollowed the account (43004)",
    43019: "the customer is on the account's blacklist (43019)",
    40013: "app_id is not valid (40013)",
    40125: "app_secret is not valid (40125)",
    40243: "app_secret is frozen: reset it in the WeChat admin (40243)",
    40164: "this server's IP address is not on the account's IP whitelist (40164)",
    48001: "the account has no permission for this API, e.g. it is not verified (48001)",
    45002: "the message is too long for WeChat (45002)",
    40004: "WeChat does not take this media type (40004)",
    40005: "WeChat does not take this file type (40005)",
    40006: "the file size is not accepted by WeChat (40006)",
    45001: "the file is too large for WeChat (45001)",
    40007: "the media id is not valid or has expired (40007)",
}
TOKEN_MARGIN_S = 300      # refresh this long before WeChat's expiry (7200 s), not at the edge
MAX_DOWNLOAD = 20 * 1024 * 1024   # the attachment store's limit: more is never stored


@dataclass(frozen=True)
class Answer:
    content: bytes
    mime: str           # the Content-Type without parameters, lower-cased


def failure(code: int, message: str) -> SendFailed:
    if code in RETRY:
        return SendFailed(RETRY[code], retry=True)
    if code in EXPIRED:
        return SendFailed(f"WeChat still rejects a fresh access_token ({code})", retry=True)
    return SendFailed(NO_RETRY.get(code) or f"WeChat error {code}: {message[:200]}", retry=False)


def errcode(resp: Answer) -> tuple[int, str]:
    """WeChat's (errcode, errmsg) of a JSON answer; (0, "") for a file or a success."""
    if not resp.content.startswith(b"{"):
        return 0, ""
    try:
        body = json.loads(resp.content)
        return int(body.get("errcode") or 0), str(body.get("errmsg") or "")
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError):   # {"errcode": 1e400}, [[[[…
        return 0, ""


class WechatApi:
    def __init__(self, http: httpx.AsyncClient, base: str, app_id: str, secret: str,
                 state: State | None, clock: Callable[[], float], timeout_s: float):
        self.http, self.base, self.app_id, self.secret = http, base.rstrip("/"), app_id, secret
        self.state, self.clock, self.timeout = state, clock, timeout_s
        self._token: tuple[str, float] = ("", 0.0)
        self._lock = asyncio.Lock()

    # -- the access_token ----------------------------------------------------------------------
    async def token(self, stale: str = "") -> str:
        """A valid token; `stale` is one WeChat just refused, never handed out again."""
        if self._usable(self._token, stale):
            return self._token[0]
        async with self._lock:
            saved = await self._load()
            if not self._usable(saved, stale):
                saved = await self._fetch_token()
                if self.state is not None:
                    await self.state.set("access_token", json.dumps(saved))
            self._token = saved
            return saved[0]

    def _usable(self, token: tuple[str, float], stale: str) -> bool:
        return bool(token[0]) and token[0] != stale and token[1] > self.clock()

    async def _load(self) -> tuple[str, float]:
        raw = await self.state.get("access_token") if self.state is not None else None
        try:
            token, expires_at = json.loads(raw) if raw else ("", 0.0)
            return str(token), float(expires_at)
        except (ValueError, TypeError):
            return "", 0.0

    async def _fetch_token(self) -> tuple[str, float]:
        resp = await self._request("GET", "/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": self.app_id, "secret": self.secret})
        code, message = errcode(resp)
        if code:
            raise failure(code, message)
        body = _json(resp)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise SendFailed("WeChat answered the token request without a token", retry=True)
        return token, self.clock() + max(expires_in - TOKEN_MARGIN_S, 60)

    # -- calls -------------------------------------------------------------------------------------
    async def call(self, request: Callable[[str], Awaitable[Answer]]) -> Answer:
        """`request(token)`, once more with a fresh token if WeChat says this one expired."""
        token = await self.token()
        resp = await request(token)
        if errcode(resp)[0] in EXPIRED:
            resp = await request(await self.token(stale=token))
        code, message = errcode(resp)
        if code:
            raise failure(code, message)
        return resp

    async def post_json(self, path: str, body: dict) -> dict:
        # ensure_ascii=False: WeChat shows \uXXXX escapes to the customer as they are
        raw = json.dumps(body, ensure_ascii=False).encode()
        resp = await self.call(lambda token: self._request(
            "POST", path, params={"access_token": token}, content=raw,
            headers={"Content-Type": "application/json; charset=utf-8"}))
        return _json(resp)

    async def upload(self, kind: str, name: str, mime: str, data: bytes) -> str:
        """A temporary media (kept 3 days by WeChat): its media_id."""
        resp = await self.call(lambda token: self._request(
            "POST", "/cgi-bin/media/upload", params={"access_token": token, "type": kind},
            files={"media": (name, data, mime)}))
        media_id = _json(resp).get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise SendFailed("WeChat answered the upload without a media_id", retry=True)
        return media_id

    async def download(self, media_id: str) -> tuple[str, bytes]:
        """(mime, bytes) of a customer's media; a video comes as a link to fetch."""
        resp = await self.call(lambda token: self._request(
            "GET", "/cgi-bin/media/get", params={"access_token": token, "media_id": media_id}))
        if resp.content.startswith(b"{"):
            url = _json(resp).get("video_url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise SendFailed("WeChat answered the media request with neither a file nor a video_url", retry=False)
            resp = await self._request("GET", url, follow_redirects=True)    # WeChat's file servers
        return resp.mime, resp.content

    async def _request(self, method: str, path: str, **kwargs) -> Answer:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        try:
            async with self.http.stream(method, url, timeout=self.timeout, **kwargs) as resp:
                data = await _read_capped(resp)
        except httpx.TimeoutException:
            raise SendFailed(f"WeChat did not answer within {self.timeout} s (a message sent may still arrive)",
                             retry=True) from None
        except httpx.HTTPError as exc:
            raise SendFailed(f"WeChat could not be reached: {type(exc).__name__}", retry=True) from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise SendFailed(f"WeChat answered HTTP {resp.status_code}", retry=True)
        if resp.status_code != 200:
            raise SendFailed(f"WeChat answered HTTP {resp.status_code}", retry=False)
        return Answer(data, resp.headers.get("content-type", "").split(";")[0].strip().lower())


async def _read_capped(resp: httpx.Response) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_DOWNLOAD:
            raise SendFailed(f"WeChat's answer is larger than {MAX_DOWNLOAD} bytes", retry=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(resp: Answer) -> dict:
    try:
        body = json.loads(resp.content)
    except (ValueError, RecursionError):     # RecursionError: JSON nested past the parser's limit
        raise SendFailed("WeChat's answer is not JSON", retry=True) from None
    if not isinstance(body, dict):
        raise SendFailed("WeChat's answer is not a JSON object", retry=True)
    return body
