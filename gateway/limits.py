"""Abuse limits counted in Redis (so every gateway counts together): fixed windows, one key
per counted thing. Over a limit → 429 (REST, with Retry-After) or an `error` frame (websocket).

- Logins: 10 failed passwords for one username of a merchant lock that username for 15 minutes
  (whether or not it exists, so the answer tells nothing); a success clears the count
  (`too_many_attempts`).
- Uploads: 60 a minute per person or customer (`too_many_attempts`).
- Widget sessions: a client IP may get `widget_sessions_per_ip_per_min` new visitor tokens a
  minute (REST `/api/v1/auth/visitor`), and open as many new conversations a minute (websocket
  `open`) — two counters, each with that limit (`too_many_sessions`). The IP is the one the
  websocket connection limit counts (`client_ip`); IPv6 addresses count by their /64, which one
  client usually holds whole. It is personal data: keys hold it only keyed-hashed (`ip_tag`).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress

from quart import has_request_context, has_websocket_context, request, websocket

from .errors import ApiError

LOGIN_FAILURES, LOGIN_WINDOW_S = 10, 15 * 60
UPLOADS, UPLOAD_WINDOW_S = 60, 60
WIDGET_SESSIONS, WIDGET_WINDOW_S = 30, 60   # the default of Settings.widget_sessions_per_ip_per_min


class TooMany(ApiError):
    def __init__(self, what: str, retry_after_s: int, code: str = "too_many_attempts"):
        super().__init__(429, code, f"{what}: too many; try again in {retry_after_s} s")
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


async def take(r, key: str, limit: int, window_s: int, what: str, code: str) -> None:
    """Count one and refuse it if that makes more than `limit` in the window: one atomic step,
    so gateways counting at the same instant never let `limit + 1` through together."""
    if await count(r, key, window_s) > limit:
        raise TooMany(what, max(1, int(await r.ttl(key))), code)


# -- the client's address -------------------------------------------------------------------------
def client_ip() -> str:
    """The address the connection came from, as the ASGI server saw it (the same the websocket
    connection limit counts). Never a header: behind a proxy or an ingress it is the proxy's,
    so limits there count all its clients together (docs/operations.md, "Limits")."""
    if has_websocket_context():
        return websocket.remote_addr or "?"
    if has_request_context():
        return request.remote_addr or "?"
    return "?"


def ip_tag(secret: bytes, ip: str) -> str:
    """What a key holds of an IP address: an HMAC with the cluster's secret, truncated — the same
    on every gateway, and no address can be read back from it (nor found by hashing all 2^32).
    IPv6 by its /64 (a client holds one, and picks any address in it); IPv4-mapped as IPv4."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        unit = ip
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        unit = str(ipaddress.ip_network(f"{address}/64", strict=False)) if address.version == 6 else str(address)
    return hmac.new(secret, unit.encode(), hashlib.sha256).hexdigest()[:20]


# Counters, not records: beside the merchant's records (`{p}limit:…`); per merchant, or per client
# address (hashed) for what comes before a merchant's customer exists.
def login_key(prefix: str, merchant: str, username: str) -> str:
    return f"{prefix}limit:login:{merchant[:64]}:{username.lower()[:64]}"


def upload_key(prefix: str, merchant: str, who: str) -> str:
    return f"{prefix}limit:upload:{merchant}:{who[:128]}"


def widget_key(prefix: str, what: str, tag: str) -> str:
    """`what`: "token" (new visitor tokens) or "open" (new conversations)."""
    return f"{prefix}limit:widget:{what}:{tag}"


async def take_widget_session(svc, what: str, ip: str) -> None:
    """One new widget session (`what`: "token" or "open") for the client at `ip`; TooMany
    (`too_many_sessions`) past `svc.widget_sessions_per_ip_per_min` this minute."""
    records = svc.records
    key = widget_key(records.p, what, ip_tag(svc.signer.secret, ip))
    noun = "new conversations" if what == "open" else "new visitor sessions"
    await take(records.r, key, svc.widget_sessions_per_ip_per_min, WIDGET_WINDOW_S,
               f"{noun} from this address", "too_many_sessions")
