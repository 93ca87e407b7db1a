"""Reading the mailbox: the standard library's imaplib, blocking, run in a thread by the connector.
One connection per poll — connect, LOGIN, EXAMINE (read-only: we set no flags, a person may use the
same mailbox), UID SEARCH, UID FETCH, LOGOUT — bounded by the channel's timeout on every socket
operation."""
from __future__ import annotations

import imaplib
import re
import ssl
from dataclasses import dataclass, field

from .config import EmailConfig

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class MailboxError(Exception):
    """The mailbox could not be read: `retry` False when only the merchant can fix it."""

    def __init__(self, reason: str, retry: bool = True):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


@dataclass
class Fetched:
    validity: int
    newest: int                                       # the highest UID in the mailbox now
    mails: list[tuple[int, bytes | None, int]] = field(default_factory=list)   # (uid, raw or None if too big, size)


def tls_context(config: EmailConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.ca_pem:
        context.load_verify_locations(cadata=config.ca_pem)
    return context


def fetch_new(config: EmailConfig, validity: int | None, after: int) -> Fetched:
    """Mails with UID > `after` (at most `config.batch`), if the mailbox's UIDVALIDITY is still
    `validity`; otherwise (or when `validity` is None) none, only where the mailbox stands."""
    try:
        imap = _connect(config)
    except (OSError, imaplib.IMAP4.error) as exc:
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise MailboxError(f"IMAP {config.imap_host}: its TLS certificate is not trusted ({exc.verify_message}): "
                               "fix the server's certificate or set the channel's ca_pem", retry=False) from None
        raise MailboxError(f"IMAP {config.imap_host}:{config.imap_port}: {_describe(exc)}") from None
    try:
        return _read(imap, config, validity, after)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"IMAP {config.imap_host}: {_describe(exc)}") from None
    finally:
        _logout(imap)


def _connect(config: EmailConfig) -> imaplib.IMAP4:
    host, port, timeout = config.imap_host, config.imap_port, config.timeout_s
    if config.imap_tls == "ssl":
        imap = imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(config), timeout=timeout)
    else:
        imap = imaplib.IMAP4(host, port, timeout=timeout)
    try:
        if config.imap_tls == "starttls":
            imap.starttls(ssl_context=tls_context(config))
        _login(imap, config)
        _identify(imap)
    except BaseException:
        _logout(imap)
        raise
    return imap


def _login(imap: imaplib.IMAP4, config: EmailConfig) -> None:
    try:
        imap.login(_quoted(config.imap_username), config.imap_password)   # imaplib quotes the password
    except imaplib.IMAP4.abort:
        raise                             # the connection broke: worth another try
    except imaplib.IMAP4.error as exc:    # the server said NO
        raise MailboxError(f"IMAP login as {config.imap_username!r} refused ({_describe(exc)}): "
                           "check the channel's imap_username and imap_password", retry=False) from None


def _identify(imap: imaplib.IMAP4) -> None:
    """RFC 2971 ID: NetEase (163.com, 126.com) refuses SELECT ("Unsafe Login") to a client that
    has not said who it is. Servers without ID are not asked."""
    if "ID" in imap.capabilities:
        try:
            imap.xatom("ID", '("name" "peakdesk" "vendor" "peakdesk")')
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            pass                          # an answer of BAD: the mailbox may still open


def _read(imap: imaplib.IMAP4, config: EmailConfig, validity: int | None, after: int) -> Fetched:
    status, _ = imap.select(f'"{config.mailbox}"', readonly=True)
    if status != "OK":
        raise MailboxError(f"IMAP mailbox {config.mailbox!r} cannot be opened (does it exist?)", retry=False)
    now, uidnext = _number(imap, "UIDVALIDITY"), _number(imap, "UIDNEXT")
    # UIDNEXT - 1: every mail that is there now has a UID up to it (RFC 3501 2.3.1.1)
    newest = uidnext - 1 if uidnext else max(_search(imap, "UID *"), default=0)
    if validity != now:
        return Fetched(now, newest)
    uids = sorted(u for u in _search(imap, f"UID {after + 1}:*") if u > after)[:config.batch]
    fetched = Fetched(now, newest)
    sizes = _sizes(imap, uids)
    for uid in uids:
        size = sizes.get(uid, 0)
        raw = _body(imap, uid) if size <= config.max_message_bytes else None
        fetched.mails.append((uid, raw, size))
    return fetched


def _number(imap: imaplib.IMAP4, code: str) -> int:
    _, data = imap.response(code)
    if not data or not data[0] or not data[0].isdigit():
        if code == "UIDNEXT":
            return 0
        raise imaplib.IMAP4.error(f"SELECT gave no {code}")
    return int(data[0])


def _search(imap: imaplib.IMAP4, criteria: str) -> list[int]:
    status, data = imap.uid("SEARCH", criteria)
    if status != "OK":
        raise imaplib.IMAP4.error(f"UID SEARCH {criteria} failed")
    return [int(n) for n in b" ".join(d for d in data if d).split()]


def _sizes(imap: imaplib.IMAP4, uids: list[int]) -> dict[int, int]:
    if not uids:
        return {}
    status, data = imap.uid("FETCH", ",".join(map(str, uids)), "(RFC822.SIZE)")
    sizes = {}
    for line in data if status == "OK" else []:
        line = line[0] if isinstance(line, tuple) else line
        uid, size = _UID.search(line or b""), _SIZE.search(line or b"")
        if uid and size:
            sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def _body(imap: imaplib.IMAP4, uid: int) -> bytes | None:
    """The whole mail (BODY.PEEK[]: not marked \\Seen); None if the server returned no such UID."""
    status, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    if status != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH {uid} failed")
    for i, item in enumerate(data):
        # the UID comes before the literal or right after it, as the server pleases
        if isinstance(item, tuple) and b"BODY[]" in item[0]:
            after = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
            found = _UID.search(item[0]) or _UID.search(after)
            if found and int(found.group(1)) == uid:
                return item[1]
    return None


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _logout(imap: imaplib.IMAP4) -> None:
    try:
        imap.logout()
    except (OSError, imaplib.IMAP4.error):
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    arg = exc.args[0] if exc.args else ""
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(exc)
    return f"{type(exc).__name__}: {text}"[:300]
