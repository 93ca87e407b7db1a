"""What a message asks of the bot before any retrieval: a person, or just a greeting or thanks.

Patterns, not a model: a customer typing 转人工 or "agent please" must reach a person every
time, and a rule is the only thing that is right every time. Both languages, normalised text.
"""
from __future__ import annotations

import re

from .text import normalise

_HUMAN_ZH = re.compile(
    r"人工(?!智能)|真人|活人|有人吗|有没有人(?!用)|客服人员|在线客服|找客服|叫客服|联系客服|客服(小姐姐|小哥哥|妹子|呢|在哪|在不在)|"
    r"小姐姐呢|有没有客服|自动回复|找你们(经理|主管|负责人|领导)|"
    r"(叫|找|让)(你们)?(经理|主管|负责人|领导)|把(你们)?的?(经理|主管|负责人|领导|老板)(叫|喊|找)|"
    r"不要机器人|别用机器人|不想(跟|和)机器人|别让机器人|你是机器人吗|机器人.{0,6}(不对|没用|听不懂)")
_HUMAN_EN = re.compile(
    r"\b(real|live|actual) (person|human|agent|people)\b|\bhuman( being)?s?\b(?! hair)|"
    r"\b(talk|speak|chat|connect|transfer|put) (me )?(to|with) (a |an |your |the )?"
    r"(person|someone|somebody|agent|representative|rep|operator|manager|supervisor|staff|customer service|"
    r"(a )?member of (your |the )?(staff|team)|staff member|team member|real agent|live agent)\b|"
    r"\b(can|could|may) i (speak|talk|chat) (to|with) (someone|somebody|a person|a human|an agent)\b|"
    r"\b(need|want|get|give)( me)? (a |an )?(agent|representative|rep|operator|manager|supervisor)\b|"
    r"^(an? )?(agent|representative|operator|human)( please| pls| plz| now)?[!. ]*$|\bagent please\b|"
    r"\bnot (a |an |the )?(bot|robot|machine)\b|\bstop (the )?bot\b|\bno (more )?bots?\b|\bare you a (bot|robot)\b")

_GREETING = re.compile(r"^(hi|hello|hey|hiya|good (morning|afternoon|evening)|在吗|在不在|在么|你好|您好|哈喽|嗨|亲|"
                       r"有人在吗|客服你好|hello there)[\s!！.。?？~]*$")
_THANKS = re.compile(r"^(thanks?( you)?( so much| a lot)?|thx|ty|ok thanks?|great,? thanks?|好的?谢谢|谢谢(你|亲|啦|了)?|"
                     r"多谢|感谢|好的?|ok|okay|收到|明白了?|知道了|got it)[\s!！.。~]*$")


# asking *about* the people ("人工客服几点下班", "what are your agents' hours") is a question for the
# knowledge base, not a request for one of them
_ABOUT_PEOPLE = re.compile(
    r"(人工|客服).{0,6}(几点|什么时候|时间|上班|下班|营业|周末|节假日|休息|电话|号码|邮箱|多久回)|"
    r"\b(hours|what time|opening|open|working|available|availability|weekends?|holidays?|phone number|email)\b")
_PLAIN_REQUEST = re.compile(r"转人工|接人工|要人工|找人工|叫人工|\b(talk|speak|connect|transfer|put) (me )?(to|with)\b")


def asks_for_human(text: str) -> bool:
    t = normalise(text)
    if not (_HUMAN_ZH.search(t) or _HUMAN_EN.search(t)):
        return False
    return not _ABOUT_PEOPLE.search(t) or bool(_PLAIN_REQUEST.search(t))


# Messages a bot must not handle whatever the knowledge base says. "angry": complaints, legal or
# regulator threats, chargebacks, and safety incidents (burns, smoke, fire, shocks) — a person
# first, with priority. "person": account takeover, fraud or impersonation, someone else's
# personal data, and business that is not customer service (press, jobs, partnerships).
_ESCALATE_ANGRY = re.compile(
    r"投诉|举报|12315|12345|消协|消费者协会|工商局|市场监管|律师|起诉|法院|报警|曝光|维权|差评|"
    r"烫伤|烧伤|烧坏|烧焦|着火|起火|冒烟|冒火|爆炸|炸了|触电|漏电|电到我|受伤|流血|进医院|"
    r"\b(complain(t|ts|ing)?|file a complaint|report(ing)? (you|this|your)|lawyers?|attorney|sue|suing|lawsuit|"
    r"legal action|court|police|chargeback|charge ?back|disput(e|ing) (the|this|a|my) (charge|payment|transaction)|"
    r"trading standards|consumer (council|protection)|bbb|burned (me|my|him|her)|burnt (me|my)|caught fire|on fire|fire hazard|"
    r"(started|was|is|it'?s) smoking|smoke (came|coming|pouring)|"
    r"explod(e|ed|ing)|electric shock|shocked me|injur(y|ed|ies)|hurt (me|my|him|her)|hospital|dangerous|unsafe)\b")
_ESCALATE_PERSON = re.compile(
    r"重复扣款|扣了两次|扣两次|扣了两遍|多扣了?钱|被扣了两|被盗|盗号|盗刷|被黑|异地登录|有人(用|登|登录|盗|冒用)(了)?我的?(号|账号|账户|帐号)|不是我(本人)?(下|买|操作|改)的?|"
    r"冒充|诈骗|骗子电话|钓鱼|中奖|个人信息(被|泄)|泄露|别人的(订单|信息|包裹|快递)|"
    r"董事长|总裁|创始人|记者|媒体采访|采访|招聘|应聘|面试|求职|工作机会|实习|商务合作|广告(合作|投放)|投放广告|"
    r"代理商|做代理|加盟|分销|赞助|投资|安全漏洞|"
    r"\b(charged (me )?twice|double[- ]charged|double charge|duplicate (charge|payment)|hack(ed|er|ing)?|stolen|someone (else )?(logged|log) in(to)?|logged into my account|unauthori[sz]ed|"
    r"i didn'?t (do|order|make|place|buy) (that|this|it)|phishing|scam (call|text|sms|message|email)|impersonat\w*|"
    r"asking for my (bank|card|password|code|pin)|personal (data|information|details) of|someone else'?s|"
    r"data (leak|breach)|ceo|founder|journalist|reporter|press (inquiry|enquiry|office)|media (inquiry|enquiry)|"
    r"job (opening|application|vacanc(y|ies))|looking for a job|hiring|vacanc(y|ies)|careers?|"
    r"internship|partnership|collaborat\w*|sponsor\w*|affiliate|influencer|advertising (partnership|deal|cooperation)|"
    r"invest(or|ment)|"
    r"vulnerabilit(y|ies)|security (issue|hole|flaw|bug|report))\b")


def needs_person(text: str) -> str | None:
    """"angry" or "person" for a message no bot answer should handle, else None."""
    t = normalise(text)
    if _ESCALATE_ANGRY.search(t):
        return "angry"
    if _ESCALATE_PERSON.search(t):
        return "person"
    return None


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
