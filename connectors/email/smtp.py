"""Answering by mail: the reply built (threaded onto the customer's mail, UTF-8 text, attachments)
and handed to the channel's SMTP server with the standard library's smtplib, blocking, in a
thread. What the server says decides whether a retry is worth it: 4xx and broken connections
yes, 5xx (a refused recipient, a refused login) no."""
from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from connectors.base import Outbound, SendFailed

from .config import EmailConfig
from .ids import Own, chain, reply_subject, valid_id
from .imap import tls_context
from .text import clean_line


def build(config: EmailConfig, own: Own, out: Outbound, body: str,
          files: list[tuple[dict, bytes]]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = Address(display_name=config.from_name, addr_spec=config.from_address)
    msg["To"] = out.external_id
    # clean_line: a subject from a stored reply_to must not carry a line break into our headers
    msg["Subject"] = reply_subject(clean_line(str(out.reply_to.get("subject") or "")), config.default_subject)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = own.message_id(out.key)
    answered = valid_id(out.reply_to.get("message_id"))
    if answered:
        earlier = [r for r in out.reply_to.get("references") or [] if valid_id(r)]
        msg["In-Reply-To"] = answered
        msg["References"] = " ".join(chain(earlier + [answered]))
    # asks Exchange and others not to answer us with out-of-office notices (mail loops)
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    msg.set_content(body, charset="utf-8", cte="base64")
    for meta, data in files:
        maintype, _, subtype = str(meta.get("mime") or "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=str(meta.get("name") or "attachment"))
    return msg


def deliver(config: EmailConfig, msg: EmailMessage, recipient: str) -> None:
    try:
        with _open(config) as smtp:
            if config.smtp_username:
                smtp.login(config.smtp_username, config.smtp_password)
            smtp.send_message(msg, from_addr=config.from_address, to_addrs=[recipient])
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        raise _by_code(code, text, f"the recipient {recipient} was refused") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise _by_code(exc.smtp_code, exc.smtp_error, "SMTP login refused: check the channel's "
                       "smtp_username and smtp_password") from None
    except smtplib.SMTPResponseException as exc:
        raise _by_code(exc.smtp_code, exc.smtp_error, "the SMTP server refused the mail") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise SendFailed(f"the SMTP server does not support it: {exc}", retry=False) from None
    except ssl.SSLCertVerificationError as exc:
        raise SendFailed(f"SMTP {config.smtp_host}: its TLS certificate is not trusted ({exc.verify_message}): "
                         "fix the server's certificate or set the channel's ca_pem", retry=False) from None
    except (smtplib.SMTPException, OSError) as exc:     # disconnected, refused, timed out, TLS broke
        what = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise SendFailed(f"SMTP {config.smtp_host}:{config.smtp_port}: {what}"[:300], retry=True) from None


def _open(config: EmailConfig) -> smtplib.SMTP:
    # EHLO names the sending domain: smtplib would otherwise look up this machine's FQDN in DNS
    args = dict(host=config.smtp_host, port=config.smtp_port, timeout=config.timeout_s,
                local_hostname=config.domain)
    if config.smtp_tls == "ssl":
        return smtplib.SMTP_SSL(context=tls_context(config), **args)
    smtp = smtplib.SMTP(**args)
    if config.smtp_tls == "starttls":
        try:
            smtp.starttls(context=tls_context(config))
        except BaseException:
            smtp.close()
            raise
    return smtp


def _by_code(code: int, text: bytes | str, what: str) -> SendFailed:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # 4xx: "try again later" (greylisting, a full mailbox, rate limits); 5xx: permanent
    return SendFailed(f"{what}: {code} {text}"[:300], retry=not 500 <= code < 600)
