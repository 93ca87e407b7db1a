"""What a message asks of the bot before any retrieval: a person, or just a greeting or thanks.

Patterns, not a model: a customer typing 转人工 or "agent please" must reach a person every
time, and a rule is the only thing that is right every time. Both languages, normalised text.
"""
from __future__ import annotations

import re

from .text import normalise

_HUMAN_ZH = re.compile(
    r"转人工|转接人工|人工客服|人工服务|人工坐席|找人工|要人工|接人工|叫人工|来个人工|人工呢|人工$|^人工|"
    r"真人|活人|有人吗|有没有人(?!用)|客服人员|在线客服|找客服|叫客服|联系客服|找你们(经理|主管|负责人|领导)|"
    r"(叫|找|让)(你们)?(经理|主管|负责人|领导)|不要机器人|别用机器人|不想(跟|和)机器人|你是机器人吗")
_HUMAN_EN = re.compile(
    r"\b(real|live|actual) (person|human|agent|people)\b|\bhuman( being)?s?\b(?! hair)|"
    r"\b(talk|speak|chat|connect|transfer|put) (me )?(to|with) (a |an |your |the )?"
    r"(person|someone|somebody|agent|representative|rep|operator|manager|supervisor|staff|customer service)\b|"
    r"\b(need|want|get|give)( me)? (a |an )?(agent|representative|rep|operator|manager|supervisor)\b|"
    r"^(an? )?(agent|representative|operator|human)( please| pls| plz| now)?[!. ]*$|\bagent please\b|"
    r"\bnot (a |an |the )?(bot|robot|machine)\b|\bstop (the )?bot\b|\bno (more )?bots?\b|\bare you a (bot|robot)\b")

_GREETING = re.compile(r"^(hi|hello|hey|hiya|good (morning|afternoon|evening)|在吗|在不在|在么|你好|您好|哈喽|嗨|亲|"
                       r"有人在吗|客服你好|hello there)[\s!！.。?？~]*$")
_THANKS = re.compile(r"^(thanks?( you)?( so much| a lot)?|thx|ty|ok thanks?|great,? thanks?|好的?谢谢|谢谢(你|亲|啦|了)?|"
                     r"多谢|感谢|好的?|ok|okay|收到|明白了?|知道了|got it)[\s!！.。~]*$")


def asks_for_human(text: str) -> bool:
    t = normalise(text)
    return bool(_HUMAN_ZH.search(t) or _HUMAN_EN.search(t))


def small_talk(text: str) -> str | None:
    """"greeting" or "thanks" for a message that is only that, else None."""
    t = normalise(text)
    if _GREETING.match(t):
        return "greeting"
    if _THANKS.match(t):
        return "thanks"
    return None


_FOLLOW_UP_EN = re.compile(r"^(and|what about|how about|also|but|so|then|ok and|and if|what if|same for|is that|"
                           r"does that)\b|\b(it|that|this|they|them|those|then)\b")
_FOLLOW_UP_ZH = re.compile(r"^(那|那么|如果|还有|另外|然后|要是|这样)|(呢|那个|这个|它)[?？]?$")


def looks_like_follow_up(text: str) -> bool:
    """Short, or leaning on something said before ("and for credit card?", "那换货呢")."""
    t = normalise(text)
    short = len(t.split()) <= 4 if t.isascii() else len(t) <= 8
    return short or bool(_FOLLOW_UP_EN.search(t) or _FOLLOW_UP_ZH.search(t))
