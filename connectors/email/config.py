"""An email channel's settings: the mailbox customers write to (read over IMAP), the server that
sends the answers (SMTP), and the address they come from. Errors name the field."""
from __future__ import annotations

import re
import ssl
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TlsMode = Literal["ssl", "starttls", "none"]
# "none" sends the password in the clear: only to a server on this very machine (a local relay).
_PLAIN_OK = {"127.0.0.1", "localhost"}
_HOST = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# Printable ASCII: usernames and passwords go into IMAP LOGIN and SMTP AUTH, which both encode
# ASCII only in the standard library's clients (mail providers' app passwords are ASCII).
_CREDENTIAL = r"^[\x20-\x7e]{1,256}$"
_DEFAULT_PORTS = {"imap": {"ssl": 993, "starttls": 143, "none": 143},
                  "smtp": {"ssl": 465, "starttls": 587, "none": 25}}


class EmailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    imap_host: str = Field(pattern=_HOST)
    imap_port: int | None = Field(default=None, ge=1, le=65535)       # 993 (ssl) or 143 when unset
    imap_tls: TlsMode = "ssl"
    imap_username: str = Field(pattern=_CREDENTIAL)
    imap_password: str = Field(pattern=_CREDENTIAL, repr=False)
    # IMAP mailbox names travel quoted; non-ASCII folder names (modified UTF-7) are not supported.
    mailbox: str = Field(default="INBOX", pattern=r'^[\x20-\x7e]{1,200}$')
    smtp_host: str = Field(pattern=_HOST)
    smtp_port: int | None = Field(default=None, ge=1, le=65535)       # 465 / 587 / 25 when unset
    smtp_tls: TlsMode = "ssl"
    smtp_username: str = Field(default="", pattern=r"^([\x20-\x7e]{1,256})?$")   # "" = no AUTH (a local relay)
    smtp_password: str = Field(default="", pattern=r"^([\x20-\x7e]{1,256})?$", repr=False)
    from_address: str = Field(max_length=254)
    from_name: str = Field(default="", max_length=100)
    default_subject: str = Field(default="客服回复 Customer service", min_length=1, max_length=200)
    # The gateway calls poll() every few seconds; the mailbox is only opened this often.
    poll_interval_s: int = Field(default=30, ge=5, le=3600)
    # A mail over this is skipped unread (its size comes from the server before it is fetched).
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=16 * 1024, le=50 * 1024 * 1024)
    # At most this many new mails are fetched per poll: the gateway's poll lock lasts 60 s.
    batch: int = Field(default=20, ge=1, le=200)
    timeout_s: float = Field(default=20.0, gt=0, le=60)
    # PEM certificate(s) to trust besides the system's: a merchant's own server with its own CA.
    ca_pem: str = Field(default="", max_length=64 * 1024)

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not ADDRESS.match(value):
            raise ValueError(f"from_address: {value!r} is not an email address like service@shop.example")
        return value.lower()

    @field_validator("from_name", "default_subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must be one line without control characters")
        return value

    @field_validator("mailbox")
    @classmethod
    def _quotable(cls, value: str) -> str:
        if '"' in value or "\\" in value:
            raise ValueError('mailbox: may not contain " or \\')
        return value

    @field_validator("ca_pem")
    @classmethod
    def _certificates(cls, value: str) -> str:
        if value:
            try:
                ssl.create_default_context().load_verify_locations(cadata=value)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"ca_pem: not PEM certificates ({exc})") from None
        return value

    @model_validator(mode="after")
    def _ports_and_plain_text(self) -> "EmailConfig":
        for side in ("imap", "smtp"):
            host, tls = getattr(self, f"{side}_host"), getattr(self, f"{side}_tls")
            if tls == "none" and host.lower() not in _PLAIN_OK:
                raise ValueError(f"{side}_tls: 'none' (no encryption) is only allowed for a server on "
                                 f"127.0.0.1 or localhost, not {host!r}: use 'ssl' or 'starttls'")
            if getattr(self, f"{side}_port") is None:
                setattr(self, f"{side}_port", _DEFAULT_PORTS[side][tls])
        if bool(self.smtp_username) != bool(self.smtp_password):
            raise ValueError("smtp_username and smtp_password: give both, or neither for a server without AUTH")
        return self

    @property
    def domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1]
