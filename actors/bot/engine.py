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

# A message that looks like a follow-up scores (alone + CONTEXT_WEIGHT * with context) / (1 + CONTEXT_WEIGHT):
# on the development set's follow-ups, top-1 was 0.76 taking the better reading, 0.79 at weight 1,
# 0.87 at 2, 0.89 at 3-4, 0.87 at 6, 0.82 with the context reading alone.
CONTEXT_WEIGHT = 3.0
MIN_MARGIN = 0.02            # two entries this close: offer both, however high the score
SURE_ANGRY = 0.995          # angry without any word of anger only when the model is this sure
CONTEXT_PENALTY = 0.08      # otherwise the context reading must be clearly better to win


@dataclass
class Decision:
    action: str                  # answer | choices | reply | handoff
    reason: str                  # match | close | chosen | keyword | greeting | thanks | asked_for_human | angry |
    #                              needs_person | no_match | repeated
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
        texts = _readings(text, context)
        ranked = self._search(text, texts, embed.encode(texts))
        return [{"id": c.entry.id, "question": c.entry.question, "answer": c.entry.answer,
                 "score": round(c.score, 4)} for c in ranked[:k] if c.score >= self.config.suggest_threshold]

    def _decide(self, text: str, context: list[str], failures: int) -> Decision:
        cfg = self.config
        lang = "zh" if has_cjk(text) or (not normalise(text) and cfg.language == "zh") else "en"
        if intents.asks_for_human(text):
            return Decision("handoff", "asked_for_human", lang, cfg.say("handoff", lang))
        texts = _readings(text, context)
        vectors = embed.encode(texts)
        mood, probs = sentiment.model().predict(text, vectors[0])
        escalate = intents.needs_person(text)
        if escalate == "angry" or (mood == "angry" and self._clearly_angry(text, probs["angry"])):
            return Decision("handoff", "angry", lang, cfg.say("handoff_angry", lang), sentiment="angry",
                            sentiment_p=probs)
        if escalate == "person":
            return Decision("handoff", "needs_person", lang, cfg.say("handoff", lang), sentiment=mood,
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

    def _clearly_angry(self, text: str, p_angry: float) -> bool:
        """A false "angry" hands over a question the bot could answer: a customer describing a problem
        calmly reads as angry to the model often enough, so anger needs the model's confidence and,
        unless the model is all but certain, a word of anger (insult, swearing, shouting)."""
        if p_angry < self.config.angry_threshold:
            return False
        return p_angry >= SURE_ANGRY or sentiment.anger_words(text)

    def _search(self, text: str, texts: list[str], vectors: np.ndarray) -> list[Candidate]:
        if not self.index.entries:
            return []
        alone = self.index.scores(texts[0], vectors[0])
        if len(texts) == 1:
            return self.index.candidates(alone)
        with_context = self.index.scores(texts[1], vectors[1])
        if intents.looks_like_follow_up(text):
            # the message leans on the previous one: read it mostly together with it
            score = (alone.score + CONTEXT_WEIGHT * with_context.score) / (1 + CONTEXT_WEIGHT)
        else:  # a question of its own: the context reading must be clearly better to win
            score = np.maximum(alone.score, with_context.score - CONTEXT_PENALTY)
        return self.index.candidates(alone, score)

    def _from_candidates(self, ranked: list[Candidate], lang: str, failures: int) -> Decision:
        cfg = self.config
        if not ranked or ranked[0].score < cfg.choice_threshold:
            return Decision("handoff", "no_match", lang, cfg.say("handoff", lang),
                            candidates=[c.brief() for c in ranked[:3]], score=ranked[0].score if ranked else 0.0)
        top = ranked[0]
        margin = top.score - (ranked[1].score if len(ranked) > 1 else 0.0)
        briefs = [c.brief() for c in ranked[:3]]
        if (top.score >= cfg.answer_threshold and margin >= MIN_MARGIN) or margin >= cfg.clear_margin:
            return Decision("answer", "match", lang, top.entry.answer, entry_id=top.entry.id,
                            cards=[c.model_dump() for c in top.entry.cards], candidates=briefs, score=top.score)
        if failures >= cfg.max_failures:  # offered choices before and still not understood: a person
            return Decision("handoff", "repeated", lang, cfg.say("handoff", lang), candidates=briefs, score=top.score)
        close = [c for c in ranked[:3] if c.score >= cfg.choice_threshold and top.score - c.score <= cfg.choice_spread]
        return Decision("choices", "close", lang, cfg.say("choices", lang),
                        candidates=[c.brief() for c in close], score=top.score)


def _readings(text: str, context: list[str] | None) -> list[str]:
    """The message alone, and (after an earlier message) read together with the last one."""
    return [text] + ([context[-1] + " " + text] if context else [])
