"""What the Graph API's error codes mean for a message we tried to send: worth trying later, or
never (and what an agent should be told). Codes from the WhatsApp Cloud API's error-code
reference; an unknown code falls back on the HTTP status (5xx and 429: later; 4xx: never)."""
from __future__ import annotations

import httpx

from connectors.base import SendFailed

WINDOW_CLOSED = ("more than 24 hours since the customer last wrote: WhatsApp only lets approved "
                 "template messages through until they write again (peakdesk sends no templates)")

# code -> what it means; all of these pass with time
LATER = {
    1: "unknown API error", 2: "API service temporarily unavailable", 4: "app request limit reached",
    80007: "WhatsApp Business Account rate limit reached", 130429: "Cloud API throughput limit reached",
    131000: "something went wrong at WhatsApp", 131016: "WhatsApp service unavailable",
    131048: "spam rate limit: too many messages from this number", 131056: "too many messages to this customer",
    131057: "business account in maintenance mode", 133004: "WhatsApp server temporarily unavailable",
}
# code -> what an agent should read; trying again changes nothing
NEVER = {
    190: "the access token is invalid or expired: generate a new system-user token in Meta Business "
         "Settings and update the channel",
    0: "authentication failed: check the channel's access token", 3: "the app lacks this capability",
    10: "permission denied: the token lacks whatsapp_business_messaging for this number",
    100: "invalid parameter", 200: "permission denied for this number",
    368: "the number is temporarily blocked for policy violations",
    470: WINDOW_CLOSED, 131047: WINDOW_CLOSED,
    131008: "a required parameter is missing", 131009: "a parameter value is invalid",
    131021: "the recipient is the business number itself",
    131026: "undeliverable: the number may not be on WhatsApp, or its app is outdated or hasn't "
            "accepted the latest terms",
    131030: "the recipient is not in the test number's allowed list",
    131031: "the business account is locked", 131042: "a payment problem on the business account",
    131051: "WhatsApp does not support this message type", 131052: "the media could not be downloaded",
    131053: "the media could not be uploaded: its type or size is not accepted",
    133010: "the phone number is not registered on the Cloud API",
}


class GraphError(SendFailed):
    """The Graph API refused or could not be reached; `code` is its error code (0 if none)."""

    def __init__(self, reason: str, retry: bool, code: int = 0):
        super().__init__(reason, retry)
        self.code = code


def from_response(resp: httpx.Response) -> GraphError:
    error = _error_of(resp)
    code = error.get("code") if isinstance(error.get("code"), int) else None
    said = _said(error)
    if code in LATER or (code not in NEVER and (resp.status_code >= 500 or resp.status_code == 429)):
        meaning, retry = LATER.get(code, f"HTTP {resp.status_code}"), True
    else:
        meaning, retry = NEVER.get(code, f"refused (HTTP {resp.status_code})"), False
    name = f"WhatsApp error {code}" if code is not None else f"WhatsApp answered HTTP {resp.status_code}"
    return GraphError(f"{name}: {meaning}" + (f" ({said})" if said else ""), retry, code or 0)


def from_transport(exc: httpx.TransportError, timeout_s: float) -> GraphError:
    if isinstance(exc, httpx.TimeoutException):
        return GraphError(f"WhatsApp API: no answer within {timeout_s:g} s", True)
    return GraphError(f"WhatsApp API unreachable ({type(exc).__name__})", True)


def _said(error: dict) -> str:
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    return "; ".join(str(x)[:200] for x in (error.get("message"), details) if x)


def _error_of(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except (ValueError, RecursionError):     # RecursionError: JSON nested past the parser's limit
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}
