"""WeCom's HTTP API as the connector uses it: the access token (cached in memory and in the
channel's state so that gateways and restarts share it; fetched anew when WeCom says it expired),
JSON calls, media download and upload. Every failure is an `ApiError(reason, retry)`."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Awaitable, Callable

import httpx

from ..base import State
from .config import Config
from .errors import TOKEN_REJECTED, classify

# WeCom's tokens live 7200 s; fetch a new one 5 minutes early so none expires in flight.
TOKEN_MARGIN_S = 300
TOKEN_STATE = "access_token"


class ApiError(Exception):
    def __init__(self, reason: str, retry: bool, code: int | None = None):
        super().__init__(reason)
        self.reason, self.retry, self.code = reason, retry, code


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str
    filename: str


class WeComApi:
    def __init__(self, config: Config, http: httpx.AsyncClient, state: State | None, clock: Callable[[], float]):
        self.cfg, self.http, self.state, self.clock = config, http, state, clock
        self._token: tuple[str, float] = ("", 0.0)
        self._token_lock = asyncio.Lock()

    # -- the access token -----------------------------------------------------------------------
    async def token(self, stale: str = "") -> str:
        """A live token; `stale` is one WeCom just rejected and must not be handed out again."""
        if self._usable(*self._token, stale):
            return self._token[0]
        async with self._token_lock:
            if not self._usable(*self._token, stale):
                stored = await self._stored_token()
                self._token = stored if self._usable(*stored, stale) else await self._fetch_token()
            return self._token[0]

    def _usable(self, token: str, expires_at: float, stale: str) -> bool:
        return bool(token) and token != stale and expires_at > self.clock()

    async def _stored_token(self) -> tuple[str, float]:
        raw = await self.state.get(TOKEN_STATE) if self.state else None
        try:
            doc = json.loads(raw) if raw else {}
            return str(doc["token"]), float(doc["expires_at"])
        except (ValueError, KeyError, TypeError):
            return "", 0.0

    async def _fetch_token(self) -> tuple[str, float]:
        params = {"corpid": self.cfg.corp_id, "corpsecret": self.cfg.secret.get_secret_value()}
        doc = await self._json(self._request("GET", "/cgi-bin/gettoken", params=params))
        code, msg = _errcode(doc)
        if code:
            raise ApiError(*classify(code, msg), code=code)
        token, expires_in = doc.get("access_token"), doc.get("expires_in", 7200)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise ApiError("WeCom's gettoken answer has no access_token", retry=True)
        fetched = (token, self.clock() + max(expires_in - TOKEN_MARGIN_S, 60))
        if self.state:
            await self.state.set(TOKEN_STATE, json.dumps({"token": fetched[0], "expires_at": fetched[1]}))
        return fetched

    # -- calls ----------------------------------------------------------------------------------
    async def call(self, path: str, body: dict | None = None, params: dict | None = None, files: dict | None = None) -> dict:
        """POST `path` with the token; the answer when its errcode is 0."""
        async def attempt(token: str):
            request = self._request("POST", path, params={**(params or {}), "access_token": token},
                                    json=body if files is None else None, files=files)
            doc = await self._json(request)
            return (doc, *_errcode(doc))
        return await self._with_token(attempt)

    async def get_media(self, media_id: str, limit: int) -> Download:
        async def attempt(token: str):
            request = self._request("GET", "/cgi-bin/media/get", params={"access_token": token, "media_id": media_id})
            download = await self._download(request, limit)
            code, msg = _json_error(download)
            return download, code, msg
        return await self._with_token(attempt)

    async def _with_token(self, attempt: Callable[[str], Awaitable[tuple]]):
        stale = ""
        for tries in (1, 2):
            token = await self.token(stale)
            result, code, msg = await attempt(token)
            if code == 0:
                return result
            if code in TOKEN_REJECTED and tries == 1:
                stale = token
                continue
            raise ApiError(*classify(code, msg), code=code)

    # -- HTTP -----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> httpx.Request:
        return self.http.build_request(method, self.cfg.api_base.rstrip("/") + path, timeout=self.cfg.timeout_s, **kwargs)

    async def _json(self, request: httpx.Request) -> dict:
        with self._transport_errors():
            response = await self.http.send(request)
        _check_status(response.status_code)
        try:
            doc = response.json()
        except (ValueError, RecursionError):     # RecursionError: JSON nested past the parser's limit
            raise ApiError("WeCom answered something that is not JSON", retry=True) from None
        if not isinstance(doc, dict):
            raise ApiError("WeCom answered JSON that is not an object", retry=True)
        return doc

    async def _download(self, request: httpx.Request, limit: int) -> Download:
        chunks, size = [], 0
        with self._transport_errors():
            response = await self.http.send(request, stream=True)
            try:
                _check_status(response.status_code)
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(f"the media is larger than {limit} bytes", retry=False)
                    chunks.append(chunk)
            finally:
                await response.aclose()
        return Download(b"".join(chunks), response.headers.get("content-type", ""),
                        _filename(response.headers.get("content-disposition", "")))

    @contextlib.contextmanager
    def _transport_errors(self):
        try:
            yield
        except httpx.TimeoutException:
            raise ApiError(f"WeCom did not answer within {self.cfg.timeout_s:g} s", retry=True) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"could not reach WeCom ({type(exc).__name__})", retry=True) from None


def _check_status(status: int) -> None:
    if status >= 500 or status == 429:
        raise ApiError(f"WeCom answered HTTP {status}", retry=True)
    if status != 200:
        raise ApiError(f"WeCom answered HTTP {status}", retry=False)


def _errcode(doc: dict) -> tuple[int, str]:
    code, msg = doc.get("errcode", 0), doc.get("errmsg", "")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ApiError("WeCom's answer has an errcode that is not a number", retry=True)
    return code, msg if isinstance(msg, str) else ""


def _json_error(download: Download) -> tuple[int, str]:
    """WeCom answers a failed media download with a JSON error instead of the file."""
    mime = download.content_type.split(";")[0].strip().lower()
    if mime not in ("application/json", "text/plain") or not download.data.lstrip().startswith(b"{"):
        return 0, ""
    try:
        doc = json.loads(download.data)
    except (ValueError, RecursionError):
        return 0, ""
    return _errcode(doc) if isinstance(doc, dict) and "errcode" in doc else (0, "")


def _filename(disposition: str) -> str:
    extended = re.search(r"filename\*\s*=\s*([\w-]*)'[^']*'([^;]+)", disposition, re.I)
    if extended:
        try:
            return urllib.parse.unquote(extended.group(2).strip(), encoding=extended.group(1) or "utf-8", errors="replace")
        except LookupError:
            return urllib.parse.unquote(extended.group(2).strip(), errors="replace")
    plain = re.search(r'filename\s*=\s*"([^"]*)"', disposition, re.I) or re.search(r"filename\s*=\s*([^;]+)", disposition, re.I)
    return plain.group(1).strip() if plain else ""
