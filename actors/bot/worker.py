"""A bot worker: the body of one Ray actor of the bot pool (actors/remote.py applies ray.remote).

Hosts send it batches of requests from sessions (`Actor.ask("bot", ...)`); it answers each with
an envelope for the asking session (`bot_reply`). Its methods are synchronous and run one at a
time: the pool has one worker per core it may use, and CPU-bound work never shares a host's
event loop. Each worker keeps every merchant's index it has served, checks the knowledge-base
version (one Redis round trip per merchant per batch) and rebuilds when it changed; phrasing
embeddings are cached by text, so an edit re-embeds only what changed.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import orjson
import redis

from storage.knowledge import load_sync, version_sync

from . import embed, live, sentiment, text
from .config import BotConfig
from .engine import Bot, Decision
from .index import KBIndex
from .kb import KBError, parse_entries
from .llm import LLMClient

log = logging.getLogger(__name__)
MAX_CACHED_VECTORS = 200_000


class BotWorker:
    def __init__(self, name: str, settings: dict):
        from actors.settings import Settings

        logging.basicConfig(level=logging.INFO)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.name = name
        self.settings = Settings.from_dict(settings)
        self.redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5)
        self.prefix = self.settings.prefix
        self.llm = LLMClient.from_settings(self.settings)
        self.bots: dict[str, tuple[int, bytes | None, Bot]] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.stats = {"requests": 0, "batches": 0, "rebuilds": 0, "errors": 0, "llm_used": 0, "llm_fallbacks": 0}
        text.warm_up()
        embed.encode(["warm up 预热"])
        sentiment.model()

    def wait_ready(self) -> dict:
        return self.statistics()

    def statistics(self) -> dict:
        return {"worker": self.name, "merchants": len(self.bots), "pid": os.getpid(), **self.stats}

    # -- requests ------------------------------------------------------------------------------
    def handle(self, requests: list[dict]) -> list[dict]:
        self.stats["batches"] += 1
        bodies: dict[int, dict] = {}
        lookups: list[live.Lookup] = []
        checked: set[str] = set()
        for i, request in enumerate(requests):
            self.stats["requests"] += 1
            merchant = request["actor"].split(":", 2)[1]
            try:
                if merchant not in checked:
                    self._refresh(merchant)
                    checked.add(merchant)
                kind = live.kind_of(request)
                settings = live.commerce_settings(self.bots[merchant][1]) if kind else {}
                if kind and live.has_data(self.redis, self.prefix, merchant, settings, kind):
                    lookups.append(live.Lookup(i, merchant, settings, kind, request))
            except Exception as exc:  # a bad KB or a bug: the session hands over on `failed`
                bodies[i] = self._failed(request, exc)
        try:
            found = live.run(self.settings.redis_url, self.prefix, lookups)
        except Exception as exc:  # noqa: BLE001 — those questions go to people, the rest are answered
            found = {}
            for lk in lookups:
                bodies[lk.index] = self._failed(lk.request, exc)
        for lk in lookups:
            self.stats[f"{lk.kind}_answers"] = self.stats.get(f"{lk.kind}_answers", 0) + 1
        answers = []
        for i, request in enumerate(requests):
            body = bodies.get(i)
            if body is None and found.get(i) is not None:
                body = {"req": request["req"], "mode": "answer", "candidates": [], "entry_id": "", "score": 1.0,
                        "sentiment": "neutral", "ms": 0.0, **found[i]}
            if body is None:
                try:
                    body = self._answer(self.bots[request["actor"].split(":", 2)[1]][2], request)
                except Exception as exc:
                    body = self._failed(request, exc)
            answers.append({"actor": request["actor"], "type": "bot_reply", "body": body})
        return answers

    def _failed(self, request: dict, exc: BaseException) -> dict:
        self.stats["errors"] += 1
        log.error("bot worker %s: request for %s failed", self.name, request.get("actor"), exc_info=exc)
        return {"req": request.get("req"), "mode": request.get("mode", "answer"), "failed": str(exc)[:200]}

    def _answer(self, bot: Bot, request: dict) -> dict:
        mode = request.get("mode", "answer")
        query = str(request.get("text", ""))
        if mode == "assist":
            found = bot.suggest(query, request.get("context") or [])
            return {"req": request["req"], "mode": "assist", "seq": request.get("seq", 0), "suggestions": found}
        choice = request.get("choice")
        context = request.get("context") or []
        decision = bot.choose(choice) if choice else bot.decide(query, context, int(request.get("failures", 0)))
        if decision.action == "answer" and bot.config.llm and self.llm is not None:
            self._phrase(bot, decision, query)
        return {"req": request["req"], "mode": "answer", **decision.to_dict()}

    def _phrase(self, bot: Bot, decision: Decision, query: str) -> None:
        grounding = [bot.index.entry(c["id"]) for c in decision.candidates[:3]]
        phrased = self.llm.phrase(query, [e for e in grounding if e is not None], decision.lang)
        if phrased:
            decision.text, decision.reason = phrased, "match_llm"
            self.stats["llm_used"] += 1
        else:
            self.stats["llm_fallbacks"] += 1

    def try_message(self, merchant: str, text: str, context: list[str]) -> dict:
        """`POST /api/v1/kb/try`: what the bot would do with a message, with its candidates."""
        self._refresh(merchant)
        bot = self.bots[merchant][2]
        return {**bot.decide(text, context).to_dict(), "kb_version": self.bots[merchant][0],
                "kb_entries": len(bot.index)}

    # -- knowledge bases -----------------------------------------------------------------------
    def _refresh(self, merchant: str) -> None:
        version, merchant_raw = version_sync(self.redis, self.prefix, merchant)
        known = self.bots.get(merchant)
        if known is not None and known[0] == version and known[1] == merchant_raw:
            return
        version, items, bot_settings = load_sync(self.redis, self.prefix, merchant)
        config = BotConfig.model_validate(bot_settings, strict=False)   # stored, checked strictly when saved
        if known is not None and known[0] == version:
            index = known[2].index  # only the settings changed
        else:
            index = self._build(merchant, items)
        self.bots[merchant] = (version, merchant_raw, Bot(index, config))

    def _build(self, merchant: str, items: list[dict]) -> KBIndex:
        t0 = time.perf_counter()
        try:
            entries = parse_entries(sorted(items, key=lambda e: e.get("id", "")))
        except KBError as exc:  # stored entries were validated on the way in; say so loudly
            log.error("bot worker %s: knowledge base of %s is invalid: %s", self.name, merchant, exc)
            entries = []
        texts = [p for e in entries for p in e.phrasings()]
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if len(self.vectors) + len(missing) > MAX_CACHED_VECTORS:
            self.vectors.clear()
            missing = list(dict.fromkeys(texts))
        for t, v in zip(missing, embed.encode_many(missing)):
            self.vectors[t] = v
        vectors = np.vstack([self.vectors[t] for t in texts]) if texts else None
        index = KBIndex(entries, vectors)
        self.stats["rebuilds"] += 1
        log.info("bot worker %s: %s's knowledge base: %d entries, %d new phrasings embedded, %.0f ms", self.name,
                 merchant, len(entries), len(missing), (time.perf_counter() - t0) * 1000)
        return index

