"""Answers from the merchant's own systems: "where is my order" (orders.py) and "which is better,
A or B" (compare.py), through the merchant's commerce adapter (storage/commerce).

A worker asks these for a whole batch at once, in one event loop: one merchant's slow OMS (up
to its `timeout_s`, at most 4 s) holds up no other merchant's customer in the same batch.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from storage.commerce.config import adapter_for

from . import compare, orders


@dataclass
class Lookup:
    index: int          # the request's place in the batch
    merchant: str
    settings: dict      # the merchant's settings.commerce
    kind: str           # "order" | "compare"
    request: dict


def commerce_settings(merchant_record: bytes | None) -> dict:
    return ((orjson.loads(merchant_record).get("settings") or {}).get("commerce") or {}) if merchant_record else {}


def kind_of(request: dict) -> str | None:
    """Which live answer the question asks for, if any (the merchant's data decides later)."""
    query, choice = str(request.get("text", "")), request.get("choice")
    if request.get("mode", "answer") != "answer":
        return None
    if not choice and orders.asks_about_order(query, request.get("context") or []) and compare.for_the_bot(query):
        return "order"
    if compare.is_choice(choice) or (not choice and compare.asks_to_compare(query)):
        return "compare"
    return None


def has_data(sync_redis, prefix: str, merchant: str, settings: dict, kind: str) -> bool:
    """Only merchants with orders (or a catalogue) get live answers; the others keep their
    knowledge base's answer. The HTTP adapter compares only with a search endpoint set."""
    if settings.get("adapter", "builtin") == "builtin":
        return bool(sync_redis.hlen(f"{prefix}m:{merchant}:{'orders' if kind == 'order' else 'products'}"))
    return kind == "order" or "search_products" in ((settings.get("http") or {}).get("endpoints") or {})


def run(redis_url: str, prefix: str, lookups: list[Lookup]) -> dict[int, dict | None]:
    """Every lookup of the batch at once; each answer (or None: the knowledge base answers)."""
    if not lookups:
        return {}
    return asyncio.run(_run(redis_url, prefix, lookups))


async def _run(redis_url: str, prefix: str, lookups: list[Lookup]) -> dict[int, dict | None]:
    r = aioredis.from_url(redis_url)
    adapters: dict = {}   # one adapter (one HTTP client) per merchant's settings in this batch
    try:
        async def one(lk: Lookup) -> dict | None:
            shop = adapter_for(r, prefix, lk.merchant, lk.settings, cache=adapters)
            q = lk.request
            if lk.kind == "order":
                return await orders.answer(shop, str(q.get("customer_id", "")), str(q.get("text", "")))
            return await compare.answer(shop, str(q.get("text", "")), q.get("choice"), compare.time_budget(lk.settings))
        found = await asyncio.gather(*(one(lk) for lk in lookups), return_exceptions=True)
    finally:
        for shop in adapters.values():
            await shop.close()
        await r.aclose()
    out = {}
    for lk, answer in zip(lookups, found):
        if isinstance(answer, BaseException):
            raise answer
        out[lk.index] = answer
    return out
