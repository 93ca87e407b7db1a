"""Optional: phrase a retrieved answer through an OpenAI-compatible chat endpoint.

Off unless the cluster is configured with `llm_url` and `llm_model` and a merchant turns
`bot.llm` on. The model sees only the retrieved entries (grounding) and the customer's
message; any failure — timeout, HTTP error, an empty or refusing answer — falls back to the
plain retrieved answer, so the LLM can make answers nicer but never slower than its timeout
or wrong in a way the knowledge base is not.
"""
from __future__ import annotations

import logging

import httpx

from .kb import Entry

log = logging.getLogger(__name__)
NO_ANSWER = "NO_ANSWER"
MAX_CHARS = 2000

_SYSTEM = ("You are the customer-service assistant of an online shop. Answer the customer's message using only "
           "the knowledge-base entries given; do not invent facts, prices, dates or policies. Reply in {language}, "
           "briefly and politely. If the entries do not answer the message, reply exactly " + NO_ANSWER + ".")


class LLMClient:
    def __init__(self, url: str, model: str, api_key: str | None, timeout_s: float):
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = httpx.Timeout(timeout_s)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=self.timeout)

    @classmethod
    def from_settings(cls, settings) -> "LLMClient | None":
        if not settings.llm_url:
            return None
        return cls(settings.llm_url, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s)

    def phrase(self, message: str, entries: list[Entry], lang: str) -> str | None:
        if not entries:
            return None
        knowledge = "\n\n".join(f"Q: {e.question}\nA: {e.answer}" for e in entries)
        body = {"model": self.model, "temperature": 0.2, "max_tokens": 400, "messages": [
            {"role": "system", "content": _SYSTEM.format(language="Chinese" if lang == "zh" else "English")},
            {"role": "user", "content": f"Knowledge base:\n{knowledge}\n\nCustomer: {message}"}]}
        try:
            response = self.client.post(self.url, json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("llm: falling back to the retrieved answer: %s: %s", type(exc).__name__, exc)
            return None
        text = (text or "").strip()
        if not text or NO_ANSWER in text:
            return None
        return text[:MAX_CHARS]
