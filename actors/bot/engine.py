"""The bot's decision for one customer message: answer, offer choices, reply, or hand over.

In order: an explicit request for a person (转人工, "agent please") or an angry / distressed
message hands over at once; a merchant's keyword rule replies; a bare greeting or thanks gets a
short reply; otherwise the knowledge base is searched — a confident match is answered, close
candidates are offered as choices, nothing good hands over. A message that leans on the
conversation so far ("and for credit card?", "那换货呢") is also searched together with the
customer's previous message, and the better reading wins.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import embed, intents, sentiment
from .config import BotConfig
from .index import Candidate, KBIndex
from .text import has_cjk, normalise

FOLLOW_UP_PENALTY = 0.0     # a message that looks like a follow-up: its context reading competes freely
CONTEXT_PENALTY = 0.08      # otherwise the context reading must be clearly better to win


@dataclass
class Decision:
    action: str                  # answer | choices | reply | handoff
    reason: str                  # match | close | keyword | greeting | thanks | asked_for_human | angry | no_match | repeated
    lang: str                    # zh | en: the customer's language, for what the bot says
    text: str = ""               # what the bot says (empty for a handoff with no message)
    entry_id: str = ""
    cards: list = field(default_factory=list)
    candidates: list = field(default_factory=list)  # [{id, question, score}], best first
    sentiment: str = "neutral"
    sentiment_p: dict = field(default_factory=dict)
    score: float = 0.0
    ms: float = 0.0

    @property
    def top_id(self) -> str:
        return self.entry_id or (self.candidates[0]["id"] if self.candidates else "")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("action", "reason", "lang", "text", "entry_id", "cards", "candidates",
                                              "sentiment", "sentiment_p", "score", "ms")}


class Bot:
    def __init__(self, index: KBIndex, config: BotConfig | None = None):
        self.index = index
        self.config = config or BotConfig()

    def decide(self, text: str, context: list[str] | None = None, failures: int = 0) -> Decision:
        t0 = time.perf_counter()
        decision = self._decide(text, [c for c in (context or []) if c][-2:], failures)
        decision.ms = round((time.perf_counter() - t0) * 1000, 3)
        return decision

    def choose(self, entry_id: str) -> Decision:
        """The customer picked one of the offered choices."""
        entry = self.index.entry(str(entry_id))
        if entry is None:  # the knowledge base changed meanwhile
            return Decision("handoff", "no_match", self.config.language, self.config.say("handoff", self.config.language))
        lang = "zh" if has_cjk(entry.question) else "en"
        return Decision("answer", "chosen", lang, entry.answer, entry_id=entry.id,
                        cards=[c.model_dump() for c in entry.cards], candidates=[{"id": entry.id,
                        "question": entry.question, "score": 1.0}], score=1.0)

    def suggest(self, text: str, context: list[str] | None = None) -> list[dict]:
        """Agent assist: the best answers for a customer's message, for the agent to send or edit."""
        k = self.config.suggestions
        if k == 0 or not normalise(text):
            return []
        texts = [text] + ([context[-1] + " " + text] if context else [])
        ranked = self._search(text, texts, embed.encode(texts))
        return [{"id": c.entry.id, "question": c.entry.question, "answer": c.entry.answer,
                 "score": round(c.score, 4)} for c in ranked[:k] if c.score >= self.config.suggest_threshold]

    def _decide(self, text: str, context: list[str], failures: int) -> Decision:
        cfg = self.config
        lang = "zh" if has_cjk(text) or (not normalise(text) and cfg.language == "zh") else "en"
        if intents.asks_for_human(text):
            return Decision("handoff", "asked_for_human", lang, cfg.say("handoff", lang))
        texts = [text] + ([context[-1] + " " + text] if context else [])
        vectors = embed.encode(texts)
        mood, probs = sentiment.model().predict(text, vectors[0])
        if mood == "angry" and probs["angry"] >= cfg.angry_threshold:
            return Decision("handoff", "angry", lang, cfg.say("handoff_angry", lang), sentiment=mood,
                            sentiment_p=probs)
        rule = cfg.keyword_reply(text)
        if rule is not None:
            return Decision("reply", "keyword", lang, rule, sentiment=mood, sentiment_p=probs)
        talk = intents.small_talk(text)
        if talk is not None:
            return Decision("reply", talk, lang, cfg.say(talk, lang), sentiment=mood, sentiment_p=probs)
        ranked = self._search(text, texts, vectors)
        decision = self._from_candidates(ranked, lang, failures)
        decision.sentiment, decision.sentiment_p = mood, probs
        return decision

    def _search(self, text: str, texts: list[str], vectors: np.ndarray) -> list[Candidate]:
        alone = self.index.search(texts[0], vectors[0], k=5)
        if len(texts) == 1:
            return alone
        penalty = FOLLOW_UP_PENALTY if intents.looks_like_follow_up(text) else CONTEXT_PENALTY
        with_context = self.index.search(texts[1], vectors[1], k=5)
        best: dict[str, Candidate] = {c.entry.id: c for c in alone}
        for c in with_context:
            adjusted = Candidate(c.entry, c.score - penalty, c.sem, c.bm25, c.cover)
            if c.entry.id not in best or adjusted.score > best[c.entry.id].score:
                best[c.entry.id] = adjusted
        return sorted(best.values(), key=lambda c: -c.score)[:5]

    def _from_candidates(self, ranked: list[Candidate], lang: str, failures: int) -> Decision:
        cfg = self.config
        if not ranked or ranked[0].score < cfg.choice_threshold:
            return Decision("handoff", "no_match", lang, cfg.say("handoff", lang),
                            candidates=[c.brief() for c in ranked[:3]], score=ranked[0].score if ranked else 0.0)
        top = ranked[0]
        margin = top.score - (ranked[1].score if len(ranked) > 1 else 0.0)
        briefs = [c.brief() for c in ranked[:3]]
        if top.score >= cfg.answer_threshold or (top.score >= cfg.choice_threshold and margin >= cfg.clear_margin):
            return Decision("answer", "match", lang, top.entry.answer, entry_id=top.entry.id,
                            cards=[c.model_dump() for c in top.entry.cards], candidates=briefs, score=top.score)
        if failures >= cfg.max_failures:  # offered choices before and still not understood: a person
            return Decision("handoff", "repeated", lang, cfg.say("handoff", lang), candidates=briefs, score=top.score)
        close = [c for c in ranked[:3] if c.score >= cfg.choice_threshold and top.score - c.score <= cfg.choice_spread]
        return Decision("choices", "close", lang, cfg.say("choices", lang),
                        candidates=[c.brief() for c in close], score=top.score)
