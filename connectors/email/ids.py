"""Message-IDs: the ones customers' mail carries (threading, dedupe), the ones we make (one per
peakdesk message, the same on every retry), and how a reply's Subject and References follow."""
from __future__ import annotations

import hashlib
import re

# <left@right> in printable ASCII without <, > or spaces: what goes back out in our References.
MSGID = re.compile(r"<[!-;=?-~]{1,250}@[!-;=?-~]{1,250}>")
MAX_REFERENCES = 20                       # the root and the newest: enough for any mail client to thread
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|回复|答复|回覆)\s*(\[\d+\])?\s*[:：]\s*)+", re.I)


class Own:
    """This channel's address and the Message-IDs it makes: `<pd.<32 hex>@<its domain>>`."""

    def __init__(self, address: str):
        self.address = address.lower()
        self.domain = self.address.rsplit("@", 1)[1]
        self.pattern = re.compile(r"<pd\.[0-9a-f]{32}@" + re.escape(self.domain) + ">", re.I)

    def message_id(self, key: str) -> str:
        """From peakdesk's message key, so a retried send carries the same Message-ID."""
        return f"<pd.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{self.domain}>"

    def is_ours(self, message_id: str) -> bool:
        return bool(self.pattern.fullmatch(message_id))

    def find_ours(self, text: str) -> str | None:
        found = self.pattern.search(text)
        return found.group(0).lower() if found else None


def valid_id(value: object) -> str | None:
    return value if isinstance(value, str) and MSGID.fullmatch(value) else None


def chain(references: list[str]) -> list[str]:
    """References capped at MAX_REFERENCES: the thread's root first, then the newest."""
    unique = list(dict.fromkeys(references))
    if len(unique) <= MAX_REFERENCES:
        return unique
    return unique[:1] + unique[-(MAX_REFERENCES - 1):]


def reply_subject(subject: str, default: str) -> str:
    """"Re: <subject>" with any Re:/回复: the subject already had folded into one."""
    bare = _REPLY_PREFIX.sub("", subject or "").strip()
    return f"Re: {bare}" if bare else default
