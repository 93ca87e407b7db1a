"""Abuse limits counted in Redis (so every gateway counts together): fixed windows, one key
per counted thing, naming its merchant. Over a limit → 429 `too_many_attempts` with Retry-After.

- Logins: 10 failed passwords for one username of a merchant lock that username for 15 minutes
  (whether or not it exists, so the answer tells nothing); a success clears the count.
- Uploads: 60 a minute per person or customer.
"""
from __future__ import annotations

from .errors import ApiError

LOGIN_FAILURES, LOGIN_WINDOW_S = 10, 15 * 60
UPLOADS, UPLOAD_WINDOW_S = 60, 60


class TooMany(ApiError):
    def __init__(self, what: str, retry_after_s: int):
        super().__init__(429, "too_many_attempts", f"{what}: too many; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


async def check(r, key: str, limit: int, what: str) -> None:
    """Refuse if `key` has reached `limit` in its window (nothing counted)."""
    count = int(await r.get(key) or 0)
    if count >= limit:
        raise TooMany(what, max(1, int(await r.ttl(key))))


async def count(r, key: str, window_s: int) -> int:
    pipe = r.pipeline(transaction=True)
    pipe.set(key, 0, ex=window_s, nx=True)     # the window starts with the first (Redis 6.2: no EXPIRE NX)
    pipe.incr(key)
    _, n = await pipe.execute()
    return int(n)


# Counters, not records: beside the merchant's records (`{p}limit:…`), each naming its merchant.
def login_key(prefix: str, merchant: str, username: str) -> str:
    return f"{prefix}limit:login:{merchant[:64]}:{username.lower()[:64]}"


def upload_key(prefix: str, merchant: str, who: str) -> str:
    return f"{prefix}limit:upload:{merchant}:{who[:128]}"
