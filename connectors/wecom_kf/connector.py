"""The WeCom customer-service (微信客服) connector.

Inbound: WeCom does not post messages, only "there is something new on account X"
(kf_msg_or_event, with a Token valid 10 minutes). Once the callback checks out, the connector pulls
what is new with kf/sync_msg from the cursor kept per account in the channel's state, converts it
(messages.py), and hands the new cursor back as `state_updates`: the gateway saves it once every
message of the pull is committed, so a crash or a WeCom failure half-way re-reads (repeats are
dropped by msgid), it never skips. Pulls of one account are serialised in this process. WeCom is answered an empty 200 — or 503
when it failed us, so that it calls again.

Outbound: kf/send_msg with a msgid derived from peakdesk's key (a retry cannot make a second copy),
after the 48-hour window is checked; errors map to SendFailed(retry) through errors.py.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections import OrderedDict
from typing import Any, Callable, ClassVar

import httpx
from pydantic import BaseModel

from ..base import Inbound, Media, Outbound, Receipt, Refused, SendFailed, State, WebhookRequest, WebhookResult
from .api import ApiError, WeComApi
from .callback import KfEvent, Signed, echo, event, signed_query
from .config import Config
from .messages import Upstream, convert
from .outbound import bodies, msgid

log = logging.getLogger(__name__)

WINDOW_MS = 48 * 3600 * 1000      # a customer can be answered within 48 hours of their last message
PAGE = 1000                       # sync_msg's largest (and default) page
SEEN_MAX = 10_000                 # signatures of accepted callbacks remembered, to refuse replays
_OPEN_KFID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class WeComKfConnector:
    name: ClassVar[str] = "wecom_kf"
    Config: ClassVar[type[BaseModel]] = Config

    def __init__(self, config: Any, http: httpx.AsyncClient, media: Media | None = None,
                 state: State | None = None, *, clock: Callable[[], float] = time.time):
        self.config = config if isinstance(config, Config) else Config.model_validate(config)
        self.media, self.state, self.clock = media, state, clock
        self.api = WeComApi(self.config, http, state, clock)
        self._pull_locks: dict[str, asyncio.Lock] = {}
        self._cursors: dict[str, str] = {}   # pulled past, not yet saved by the gateway (this process)
        self._seen: OrderedDict[str, int] = OrderedDict()

    # -- inbound --------------------------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> WebhookResult:
        if request.method not in ("GET", "POST"):
            raise Refused(f"method {request.method}: WeCom sends GET (URL verification) and POST (events)", 405)
        signed = signed_query(request, self.config, self.clock())
        if request.method == "GET":
            return WebhookResult(body=echo(request, self.config, signed))
        kf = event(request, self.config, signed)
        self._refuse_replay(signed)
        if kf.event != "kf_msg_or_event":
            self._remember(signed)
            return WebhookResult(body=b"")
        try:
            inbound, receipts, cursor = await self._pull(kf)
        except Upstream as exc:
            log.warning("wecom_kf %s: pull failed, WeCom will call again: %s", kf.open_kfid, exc)
            return WebhookResult(status=503, body=b"")
        self._remember(signed)
        # the cursor is saved by the gateway once these messages are committed (never skipped)
        return WebhookResult(inbound=inbound, receipts=receipts, body=b"", state_updates=cursor)

    def _refuse_replay(self, signed: Signed) -> None:
        if signed.signature.lower() in self._seen:
            raise Refused("replayed: this signed callback was already accepted", 403)

    def _remember(self, signed: Signed) -> None:
        oldest = self.clock() - self.config.max_clock_skew_s
        while self._seen and (len(self._seen) >= SEEN_MAX or next(iter(self._seen.values())) < oldest):
            self._seen.popitem(last=False)
        self._seen[signed.signature.lower()] = int(signed.timestamp)

    async def _pull(self, kf: KfEvent) -> tuple[list[Inbound], list[Receipt], dict[str, str]]:
        lock = self._pull_locks.setdefault(kf.open_kfid, asyncio.Lock())
        async with lock:
            messages, cursor = await self._sync(kf)
            inbound, receipts = [], []
            for msg in messages:
                item = await convert(msg, self.api, self.media)
                if isinstance(item, Inbound):
                    inbound.append(item)
                elif isinstance(item, Receipt):
                    receipts.append(item)
            inbound = await self._with_names(inbound)
            if cursor:
                self._cursors[kf.open_kfid] = cursor
            return inbound, receipts, ({f"cursor:{kf.open_kfid}": cursor} if cursor else {})

    async def _sync(self, kf: KfEvent) -> tuple[list, str]:
        cursor = self._cursors.get(kf.open_kfid) or \
            (await self.state.get(f"cursor:{kf.open_kfid}") if self.state else None) or ""
        messages, token = [], kf.token
        for _ in range(self.config.max_pages):
            body = {"cursor": cursor, "token": token, "limit": PAGE, "voice_format": 0, "open_kfid": kf.open_kfid}
            try:
                doc = await self.api.call("/cgi-bin/kf/sync_msg", {k: v for k, v in body.items() if v != ""})
            except ApiError as exc:
                if exc.code == 95007 and token:     # the callback's Token is past its 10 minutes
                    token = ""
                    continue
                raise Upstream(f"sync_msg: {exc.reason}") from None
            page, cursor, more = _page(doc, cursor)
            messages += page
            if not more:
                break
        return messages, cursor

    async def _with_names(self, inbound: list[Inbound]) -> list[Inbound]:
        """The customers' WeChat nicknames (kf/customer/batchget, 100 at a time); best effort."""
        ids, names = sorted({i.external_id for i in inbound}), {}
        for start in range(0, len(ids), 100):
            try:
                doc = await self.api.call("/cgi-bin/kf/customer/batchget",
                                          {"external_userid_list": ids[start:start + 100], "need_enter_session_context": 0})
            except ApiError as exc:
                log.info("wecom_kf: no nicknames: %s", exc.reason)
                break
            names.update({c["external_userid"]: c["nickname"] for c in doc.get("customer_list") or []
                          if isinstance(c, dict) and isinstance(c.get("external_userid"), str)
                          and isinstance(c.get("nickname"), str)})
        return [dataclasses.replace(i, name=names[i.external_id][:64]) if names.get(i.external_id) else i for i in inbound]

    # -- outbound -------------------------------------------------------------------------------
    async def send(self, message: Outbound) -> str:
        open_kfid = self._open_kfid(message)
        if not message.external_id:
            raise SendFailed("no customer (external_userid) to send to", retry=False)
        if message.last_inbound_ms and self.clock() * 1000 - message.last_inbound_ms > WINDOW_MS:
            raise SendFailed("window: the customer last wrote more than 48 hours ago; WeCom lets a customer "
                             "be answered only within 48 hours of their last message", retry=False)
        parts = await bodies(message, self.api, self.media)
        first, progress_key = msgid(message.key), f"parts:{msgid(message.key)}"
        done = int(await self.state.get(progress_key) or 0) if self.state and len(parts) > 1 else 0
        for index, body in enumerate(parts[done:], start=done):
            await self._send_one({"touser": message.external_id, "open_kfid": open_kfid,
                                  "msgid": msgid(message.key, index), **body})
            if self.state and len(parts) > 1:
                await self.state.set(progress_key, str(index + 1))
        return first

    def _open_kfid(self, message: Outbound) -> str:
        reply_to = message.reply_to if isinstance(message.reply_to, dict) else {}
        only = self.config.open_kfids[0] if len(self.config.open_kfids) == 1 else ""
        open_kfid = reply_to.get("open_kfid") or message.thread or only
        if not isinstance(open_kfid, str) or not _OPEN_KFID.match(open_kfid):
            raise SendFailed("no customer-service account (open_kfid) to send from: the customer's message "
                             "carries it in reply_to", retry=False)
        if not self.config.serves(open_kfid):
            raise SendFailed(f"open_kfid {open_kfid} is not one of this channel's accounts", retry=False)
        return open_kfid

    async def _send_one(self, payload: dict) -> str:
        try:
            doc = await self.api.call("/cgi-bin/kf/send_msg", payload)
        except ApiError as exc:
            raise SendFailed(exc.reason, retry=exc.retry) from None
        return doc["msgid"] if isinstance(doc.get("msgid"), str) and doc["msgid"] else payload["msgid"]


def _page(doc: dict, cursor: str) -> tuple[list, str, bool]:
    messages, next_cursor, more = doc.get("msg_list"), doc.get("next_cursor", ""), doc.get("has_more", 0)
    if not isinstance(messages, list) or not isinstance(next_cursor, str) or more not in (0, 1):
        raise Upstream("sync_msg: the answer has no msg_list/next_cursor/has_more of the documented types")
    return messages, next_cursor or cursor, bool(more)
