"""A mail's words as the agent should see them: bytes decoded in the charset the mail claims (or
the one it really uses), HTML reduced to text, and the quoted history of earlier mails trimmed off
so only what the customer just wrote is left."""
from __future__ import annotations

import codecs
import html
import re

import nh3

# Chinese mailers label GBK text "gb2312" and Big5-HKSCS text "big5": decode with the superset.
_SUPERSET = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
             "euc-cn": "gb18030", "gb_2312-80": "gb18030", "big5": "big5hkscs", "x-big5": "big5hkscs",
             "ascii": "utf-8", "us-ascii": "utf-8"}


def decode_bytes(data: bytes, declared: str | None) -> str | None:
    """Text in the declared charset, else UTF-8 (the usual mislabel; GB18030 after a UTF-8 label);
    with no usable label, UTF-8 then GB18030. None when nothing decodes it cleanly: the mail is
    refused rather than garbled."""
    label = (declared or "").strip().lower()
    codec = _SUPERSET.get(label, label)
    if label and _known(codec):
        # mail labelled UTF-8 that is really GBK comes from misconfigured Chinese systems
        tries = [codec, "utf-8"] + (["gb18030"] if codecs.lookup(codec).name == "utf-8" else [])
    else:
        tries = ["utf-8", "gb18030"]
    for codec in tries:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def _known(codec: str) -> bool:
    try:   # "base64" or "rot13" are codecs too, but not of text
        return getattr(codecs.lookup(codec), "_is_text_encoding", True)
    except LookupError:
        return False


_BLOCK_TAGS = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6]|p|div|tr|li|blockquote|/blockquote)\b[^>]*>", re.I)
# Where mail clients put the quoted earlier mail in HTML: everything from there on is dropped.
_HTML_QUOTES = re.compile(r'class="?gmail_quote|class="?moz-cite-prefix|id="?divRplyFwdMsg|'
                          r'id="?appendonsend|type="?cite|id="?reply-intro', re.I)


def html_to_text(markup: str) -> str:
    cut = _HTML_QUOTES.search(markup)
    if cut:
        markup = markup[:max(markup.rfind("<", 0, cut.start()), 0)]
    markup = re.sub(r"\s+", " ", markup)
    markup = _BLOCK_TAGS.sub("\n", markup)
    text = html.unescape(nh3.clean(markup, tags=set(), clean_content_tags={"script", "style", "head", "title"}))
    return re.sub(r"\n{2,}", "\n", "\n".join(line.strip() for line in text.split("\n"))).strip()


_QUOTE_START = [
    re.compile(r"^-{2,}\s*(原始邮件|Original Message|Forwarded message|转发邮件|回复邮件)\s*-{2,}", re.I),
    re.compile(r"^在.{0,300}写道\s*[:：]$"),      # Apple Mail, Foxmail in Chinese
    re.compile(r"^_{10,}$"),                       # Outlook's rule above its quoted header block
    re.compile(r"^-- ?$"),                         # the signature separator
]
# "On <date>, <someone> wrote:" (on one line or two), "<someone> 于<date>写道：" (Gmail in Chinese)
_ATTRIBUTION = re.compile(r"^.{0,300}(\bwrote|写道)\s*[:：]$", re.I)
_HEADER_BLOCK = re.compile(r"^(From|发件人|寄件者)\s*[:：]", re.I)
_HEADER_NEXT = re.compile(r"^(Sent|Date|To|发送时间|时间|日期|收件人|寄件日期)\s*[:：]", re.I)


def new_text(text: str) -> str:
    """What the customer wrote above (or between) the quoted history; all of it if that is empty."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        bare = line.strip()
        if _starts_quote(bare, [a.strip() for a in lines[i + 1:i + 4]]):
            break
        if not bare.startswith(">"):
            kept.append(line.rstrip())
    trimmed = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return trimmed or text.strip()


def _starts_quote(line: str, after: list[str]) -> bool:
    if any(p.match(line) for p in _QUOTE_START):
        return True
    if line.startswith("On ") and (_ATTRIBUTION.match(line) or after and _ATTRIBUTION.match(f"{line} {after[0]}")):
        return True
    following = next((a for a in after if a), "")
    if _ATTRIBUTION.match(line) and following.startswith(">"):     # other wordings: only when a quote follows
        return True
    return bool(_HEADER_BLOCK.match(line)) and any(_HEADER_NEXT.match(a) for a in after)


def clean_line(value: str) -> str:
    """A header value on one line; the caller refuses line breaks before this (header injection)."""
    return re.sub(r"\s+", " ", value).strip()


def has_controls(value: str) -> bool:
    return any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value)


def body_clean(text: str) -> str:
    """Control characters other than tab and newline removed (NULs from broken mailers)."""
    return "".join(c for c in text if c in "\t\n" or not (ord(c) < 32 or ord(c) == 127))
