"""WeCom's errcodes and what each means for a message we send: try again later or never, with a
reason an agent can read. From WeCom's global error-code list (全局错误码) and the 微信客服 codes
95000–95018; anything else is reported with its code and WeCom's errmsg, and not retried (a
worker retrying an unknown rejection forever would only hide it)."""
from __future__ import annotations

# The access token is stale or missing: fetch a new one and call once more.
TOKEN_REJECTED = {40014, 41001, 42001}

RETRY = {
    -1: "WeCom is busy (系统繁忙)",
    45009: "WeCom's API rate limit was reached (接口调用超过限制)",
    45033: "too many concurrent calls to WeCom (接口并发调用超过限制)",
}

NO_RETRY = {
    # credentials and set-up: the merchant must fix the channel's settings
    40001: "the channel's Secret is not valid (use the 微信客服 app's Secret)",
    40013: "the channel's corp id is not valid",
    40014: "WeCom rejected the access token even after it was fetched anew",
    40091: "the channel's Secret is not valid",
    48002: "this Secret may not call the customer-service API",
    60020: "this server's IP address is not in the WeCom trusted IP list (企业可信IP)",
    95012: "WeCom customer service (微信客服) is not used in WeCom by this corp",
    95017: "the customer-service API switch is off in the WeCom admin console",
    # recipient
    40096: "invalid external_userid: not a WeChat customer of this corp",
    95000: "invalid open_kfid (customer-service account)",
    95004: "the customer-service account (open_kfid) does not exist: deleted, or of another corp",
    # the message window: the customer must write again first
    95001: "window: 5 messages were already sent since the customer last wrote; wait for the customer to write again",
    95002: "window: the customer last wrote more than 48 hours ago; wait for the customer to write again",
    95003: "the customer-service account has reached its limit of customers it may serve",
    95013: "the customer's session has ended",
    95018: "the session does not accept API messages now: a servicer took it in the WeCom app, "
           "or the customer last wrote more than 48 hours ago",
    # the message itself
    40004: "WeCom does not accept this media type",
    40006: "WeCom does not accept this file size",
    40007: "invalid media_id (expired after 3 days, or never uploaded)",
    40009: "the image is too large for WeCom (at most 10 MB)",
    40011: "the video is too large for WeCom (at most 10 MB)",
    44004: "the text is empty",
    45002: "the message is too long for WeCom",
}

# msg_send_fail events (sync_msg) say why a message we sent did not reach the customer.
SEND_FAIL_TYPES = {
    0: "unknown reason", 1: "the customer-service account was deleted", 2: "the app was closed",
    4: "session expired: the customer last wrote more than 48 hours ago", 5: "the session was closed",
    6: "more than 5 messages since the customer last wrote", 8: "the corp is not verified",
    10: "the customer refused the message", 11: "no member of the corp is logged in to the WeCom app",
    12: "WeCom customer service does not allow this message type", 13: "security restriction",
}


def classify(code: int, errmsg: str) -> tuple[str, bool]:
    """(reason, retry) for a WeCom errcode other than 0."""
    if code in RETRY:
        return f"{RETRY[code]} (errcode {code})", True
    if code in NO_RETRY:
        return f"{NO_RETRY[code]} (errcode {code})", False
    return f"WeCom refused the call: errcode {code}: {errmsg[:200]}", False
