"""A merchant's bot settings (the `bot` object of its merchant settings), validated.

Everything the bot says has a Chinese and an English default; a merchant may replace any of
them (a string for both languages, or {"zh": ..., "en": ...}).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .text import normalise

DEFAULT_TEXTS: dict[str, dict[str, str]] = {
    "welcome": {"zh": "您好，我是智能客服，请问有什么可以帮您？输入“转人工”可联系人工客服。",
                "en": "Hi! I'm the shop's assistant. How can I help? Type \"agent\" to talk to a person."},
    "greeting": {"zh": "您好，请问有什么可以帮您？", "en": "Hello! What can I help you with?"},
    "thanks": {"zh": "不客气，还有其他问题随时问我哦。", "en": "You're welcome! Anything else I can help with?"},
    "choices": {"zh": "您是想问以下哪个问题？", "en": "Did you mean one of these?"},
    "handoff": {"zh": "正在为您转接人工客服，请稍候。", "en": "I'm connecting you with a member of our team, one moment please."},
    "handoff_angry": {"zh": "非常抱歉给您带来不便，正在为您优先转接人工客服。",
                      "en": "I'm sorry about this. I'm connecting you with a member of our team right away."},
    "outside_hours": {"zh": "现在是非工作时间，人工客服上班后会尽快回复您。",
                      "en": "Our team is offline right now; they will reply as soon as they are back."},
}


class KeywordRule(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    keywords: list[str] = Field(min_length=1, max_length=20)
    reply: str = Field(min_length=1, max_length=2000)
    match: str = Field(default="any", pattern="^(any|all|exact)$")

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str]) -> list[str]:
        out = [normalise(k) for k in v]
        if any(not k or len(k) > 100 for k in out):
            raise ValueError("each keyword must be 1-100 characters")
        return out

    def matches(self, text: str) -> bool:
        t = normalise(text)
        if self.match == "exact":
            return t in self.keywords
        hits = [k in t for k in self.keywords]
        return all(hits) if self.match == "all" else any(hits)


class BotConfig(BaseModel):
    # strict: a client's JSON of the wrong type is refused naming the field ("2" is not 2, 1 is not
    # true); stored settings were checked so when saved, and are read back with strict=False
    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool = True
    language: str = Field(default="zh", pattern="^(zh|en)$")  # for messages with no letters of either
    texts: dict[str, str | dict[str, str]] = Field(default_factory=dict)
    keyword_replies: list[KeywordRule] = Field(default_factory=list, max_length=200)
    answer_threshold: float = Field(default=0.55, ge=0, le=1)
    choice_threshold: float = Field(default=0.2, ge=0, le=1)
    clear_margin: float = Field(default=0.12, ge=0, le=1)
    choice_spread: float = Field(default=0.1, ge=0, le=1)
    angry_threshold: float = Field(default=0.5, ge=0, le=1)
    max_failures: int = Field(default=2, ge=1, le=10)
    suggestions: int = Field(default=3, ge=0, le=10)       # agent assist: answers pushed per message
    suggest_threshold: float = Field(default=0.3, ge=0, le=1)
    llm: bool = False                                       # phrase answers through the configured LLM

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: dict) -> dict:
        for key, value in v.items():
            if key not in DEFAULT_TEXTS:
                raise ValueError(f"unknown text {key!r}; known: {', '.join(DEFAULT_TEXTS)}")
            values = value.values() if isinstance(value, dict) else [value]
            if isinstance(value, dict) and set(value) - {"zh", "en"}:
                raise ValueError(f"{key}: languages are zh and en")
            if any(not isinstance(s, str) or len(s) > 2000 for s in values):
                raise ValueError(f"{key}: at most 2000 characters")
        return v

    def say(self, key: str, lang: str) -> str:
        own = self.texts.get(key)
        if isinstance(own, str):
            return own
        if isinstance(own, dict) and own.get(lang):
            return own[lang]
        return DEFAULT_TEXTS[key][lang]

    def keyword_reply(self, text: str) -> str | None:
        for rule in self.keyword_replies:
            if rule.matches(text):
                return rule.reply
        return None
