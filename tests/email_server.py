"""Real mail servers on 127.0.0.1 for the email connector's tests, each in a thread of its own and
stopped when its `with` block ends:

- `ImapServer`: pymap (an IMAP4rev1 server) with its in-memory backend; mail is put in with a real
  IMAP APPEND (`append`), a mailbox renumbered with DELETE + CREATE (`recreate`: new UIDVALIDITY);
- `SmtpServer`: aiosmtpd, recording every mail it accepts (`received`), refusing chosen recipients
  with chosen replies (`codes`), with optional AUTH;
- `SilentServer`: accepts connections and never says a word (timeouts);
- `make_certificate`: a self-signed certificate for 127.0.0.1 and localhost (TLS: "ssl", "starttls").
"""
from __future__ import annotations

import asyncio
import datetime
import email
import imaplib
import ipaddress
import re
import socket
import ssl
import threading
from argparse import Namespace
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import DictBackend, Login
from pymap.imap import IMAPServer

START_TIMEOUT_S = 10


@dataclass(frozen=True)
class Certificate:
    cert_path: str
    key_path: str
    pem: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.pem)


def make_certificate(directory: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peakdesk test mail server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "mail-cert.pem", directory / "mail-key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificate(str(cert_path), str(key_path), pem.decode())


class _PymapConfig(DictConfig):
    @property
    def greeting(self) -> bytes:          # pymap's own asks DNS for this machine's FQDN
        return b"Server ready localhost"


class ImapServer:
    """One user, any mailboxes it creates. `tls`: None, "ssl" (TLS from the first byte) or "starttls"
    (LOGIN refused until STARTTLS, as pymap does)."""

    def __init__(self, user: str, password: str, tls: str | None = None, cert: Certificate | None = None):
        self.user, self.password, self.tls, self.cert = user, password, tls, cert
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> "ImapServer":
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the IMAP test server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        args = Namespace(host="127.0.0.1", port=0, debug=False, cert=None, key=None, tls=self.tls == "starttls",
                         passlib_cfg=None, proxy_protocol=None, demo_data=False, demo_user=self.user,
                         demo_password=self.password)
        extra = {"ssl_context": self.cert.server_context()} if self.cert else {}
        config = _PymapConfig.from_args(args, invalid_user_sleep=0.0, reject_dnsbl=False, **extra)
        config.apply_context()
        login = Login(config)
        await DictBackend._add_demo_user(config, login)     # the dict backend's one way to add a user
        handler = ProxyProtocolReader(config.proxy_protocol).get_callback(IMAPServer(login, config))
        server = await asyncio.start_server(handler, "127.0.0.1", 0,
                                            ssl=self.cert.server_context() if self.tls == "ssl" else None)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    # -- a mail client's side, to put mail in ------------------------------------------------------
    def client(self) -> imaplib.IMAP4:
        if self.tls == "ssl":
            imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self.cert.client_context(), timeout=5)
        else:
            imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=5)
            if self.tls == "starttls":
                imap.starttls(ssl_context=self.cert.client_context())
        imap.login(f'"{self.user}"', self.password)
        return imap

    def append(self, raw: bytes, mailbox: str = "INBOX") -> int:
        """The mail delivered into `mailbox` (created if need be); its UID (APPENDUID)."""
        return self.append_all([raw], mailbox)[0]

    def append_all(self, raws: list[bytes], mailbox: str = "INBOX") -> list[int]:
        imap = self.client()
        try:
            imap.create(f'"{mailbox}"')                      # NO if it exists: fine
            uids = []
            for raw in raws:
                status, data = imap.append(f'"{mailbox}"', None, None, raw)
                assert status == "OK", data
                uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1)))
            return uids
        finally:
            imap.logout()

    def recreate(self, mailbox: str) -> None:
        """Delete and create `mailbox`: empty, with a new UIDVALIDITY."""
        imap = self.client()
        try:
            imap.delete(f'"{mailbox}"')
            assert imap.create(f'"{mailbox}"')[0] == "OK"
        finally:
            imap.logout()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: email.message.EmailMessage
    authenticated_as: str | None


@dataclass
class _Handler:
    codes: dict[str, str]
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.codes:
            return self.codes[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), data,
                                      email.message_from_bytes(data, policy=policy.default), login))
        return "250 Message accepted for delivery"


class SmtpServer:
    """`codes`: recipient address → the reply its RCPT TO gets ("451 4.7.1 try later").
    `user`/`password`: AUTH required, and only these pass."""

    def __init__(self, tls: str | None = None, cert: Certificate | None = None, codes: dict[str, str] | None = None,
                 user: str | None = None, password: str | None = None):
        self.handler = _Handler({k.lower(): v for k, v in (codes or {}).items()})
        self.user, self.password = user, password
        self.port = free_port()
        kwargs: dict = {"server_hostname": "mx.test.example", "ready_timeout": START_TIMEOUT_S}
        if tls == "ssl":
            kwargs["ssl_context"] = cert.server_context()
        elif tls == "starttls":
            kwargs.update(tls_context=cert.server_context(), require_starttls=True)
        if user is not None:
            # aiosmtpd counts only STARTTLS as TLS for AUTH: on implicit TLS ("ssl") it must not require it
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=tls == "starttls")
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == self.user and auth_data.password.decode() == self.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    def __enter__(self) -> "SmtpServer":
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()


class SilentServer:
    """Takes TCP connections and never answers: a server that hangs."""

    def __init__(self):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._closed.is_set():
            try:
                self._held.append(self._sock.accept()[0])
            except OSError:
                continue

    def __enter__(self) -> "SilentServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed.set()
        self._thread.join(START_TIMEOUT_S)
        for conn in self._held:
            conn.close()
        self._sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
