"""A local server playing Meta's Graph API for the WhatsApp connector's tests, and the webhook
notifications Meta would send, built from Meta's documentation rather than from the connector:

- notifications are JSON with non-ASCII escaped as \\uXXXX (lowercase hex), as Meta sends them,
  signed X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(app secret, raw body) — the HMAC
  written out from RFC 2104 here, not the `hmac` module the connector uses;
- the Graph API: POST /{version}/{phone-number-id}/messages and /media (multipart), GET
  /{version}/{media-id} → a CDN url, GET that url with the Bearer token → the bytes, GET
  /{version}/oauth/access_token (fb_exchange_token) → a renewed 60-day token. Each checks the
  Bearer token and `appsecret_proof`, and answers Graph-style errors ({"error": {"code", ...}}).

`with GraphServer() as graph:` — `graph.base` is the api_base, `graph.requests` what arrived,
`graph.fail(route, status, code)` queues an error, `graph.slow` delays answers (bounded: 2 s).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

APP_ID = "1234567890123"
APP_SECRET = "5f3c0d9e8b7a6f5e4d3c2b1a0f9e8d7c"
VERIFY_TOKEN = "pd-verify-2024-令牌"
PHONE_NUMBER_ID = "109876543210987"
WABA_ID = "102290129340398"
TOKEN = "EAAGpermanentSystemUserToken0001"
VERSION = "v23.0"
CUSTOMER = "8613800138000"
DAY = 86400
JSON = "application/json"


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """RFC 2104 with SHA-256 (64-byte blocks), written out."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac_sha256(secret.encode(), body).hex()


def encode(payload: object) -> bytes:
    """Meta's bytes: compact JSON, non-ASCII as lowercase \\uXXXX escapes."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def notification(messages=(), statuses=(), contacts=(), *, phone_number_id=PHONE_NUMBER_ID, waba=WABA_ID) -> dict:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id}}
    if contacts:
        value["contacts"] = list(contacts)
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    change = {"field": "messages", "value": value}
    return {"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [change]}]}


def contact(name: str, wa_id: str = CUSTOMER) -> dict:
    return {"profile": {"name": name}, "wa_id": wa_id}


def message(kind: str, part: dict, *, wamid: str, sender: str = CUSTOMER, at: float | None = None) -> dict:
    return {"from": sender, "id": wamid, "timestamp": str(int(at if at is not None else time.time())),
            "type": kind, kind: part}


def status(wamid: str, state: str, *, errors=(), at: float | None = None) -> dict:
    row = {"id": wamid, "status": state, "timestamp": str(int(at if at is not None else time.time())),
           "recipient_id": CUSTOMER}
    if errors:
        row["errors"] = list(errors)
    return row


@dataclass
class Blob:
    data: bytes
    mime: str
    sha256: str = ""              # what the API claims; "" = the real one
    file_size: int = -1           # what the API claims; -1 = the real one
    url: str = ""                 # where the API says it is; "" = this server's CDN


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    json: object = None
    form: dict = field(default_factory=dict)


class GraphServer:
    def __init__(self):
        self.tokens: dict[str, float | None] = {TOKEN: None}   # token -> expiry (None: never)
        self.blobs: dict[str, Blob] = {}
        self.requests: list[Seen] = []
        self.faults: dict[str, list[tuple[int, dict | bytes]]] = {}
        self.slow = 0.0
        self.issued = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, route: str, status: int, code: int = 0, message: str = "test fault", raw: bytes | None = None):
        body = _error(code, message)
        body["error"]["error_data"] = {"messaging_product": "whatsapp", "details": message}
        self.faults.setdefault(route, []).append((status, raw if raw is not None else body))

    def seen(self, route: str) -> list[Seen]:
        return [r for r in self.requests if self._route(r.method, r.path)[0] == route]

    def _route(self, method: str, path: str) -> tuple[str, str]:
        parts = path.strip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2:
            return "download", parts[1]
        if parts[0] != VERSION or len(parts) < 2:
            return "unknown", ""
        if parts[1:] == ["oauth", "access_token"]:
            return "exchange", ""
        if len(parts) == 3 and parts[1] == PHONE_NUMBER_ID and method == "POST":
            return {"messages": "messages", "media": "upload"}.get(parts[2], "unknown"), ""
        return ("media_info", parts[1]) if len(parts) == 2 and method == "GET" else ("unknown", "")

    def answer(self, seen: Seen) -> tuple[int, dict | bytes, str]:
        route, arg = self._route(seen.method, seen.path)
        if self.faults.get(route):
            status, body = self.faults[route].pop(0)
            return status, body, JSON
        if route == "exchange":
            return self._exchange(seen.query)
        denied = self._denied(seen, proof=route != "download")
        if denied:
            return denied
        if route == "messages":
            to = seen.json.get("to")
            return 200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                         "messages": [{"id": f"wamid.HBgN{len(self.seen('messages')):04d}"}]}, JSON
        if route == "upload":
            return 200, {"id": f"{900000 + len(self.seen('upload'))}"}, JSON
        if route == "media_info":
            return self._media_info(arg)
        if route == "download" and arg in self.blobs:
            return 200, self.blobs[arg].data, self.blobs[arg].mime
        return 404, _error(100, "Unsupported request: no such object"), JSON

    def _denied(self, seen: Seen, proof: bool):
        token = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return 401, _error(190, "Invalid OAuth access token - Cannot parse access token", 467), JSON
        expiry = self.tokens[token]
        if expiry is not None and expiry <= time.time():
            return 401, _error(190, "Error validating access token: Session has expired", 463), JSON
        expected = hmac_sha256(APP_SECRET.encode(), token.encode()).hex()
        if proof and seen.query.get("appsecret_proof") != expected:
            return 400, _error(100, "Invalid appsecret_proof provided in the API argument"), JSON
        return None

    def _exchange(self, q: dict):
        good = (q.get("grant_type") == "fb_exchange_token" and q.get("client_id") == APP_ID
                and q.get("client_secret") == APP_SECRET and q.get("set_token_expires_in_60_days") == "true")
        old = q.get("fb_exchange_token", "")
        if not good:
            return 400, _error(101, "Error validating client secret"), JSON
        if old not in self.tokens or (self.tokens[old] is not None and self.tokens[old] <= time.time()):
            return 400, _error(190, "Error validating access token: Session has expired", 463), JSON
        self.issued += 1
        token = f"EAAGrenewedSystemUserToken{self.issued:04d}"
        self.tokens[token] = time.time() + 60 * DAY
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": 60 * DAY}, JSON

    def _media_info(self, media_id: str):
        blob = self.blobs.get(media_id)
        if blob is None:
            return 400, _error(100, f"Unsupported get request. Object with ID '{media_id}' does not exist"), JSON
        size = blob.file_size if blob.file_size >= 0 else len(blob.data)
        return 200, {"messaging_product": "whatsapp", "url": blob.url or f"{self.base}/cdn/{media_id}",
                     "mime_type": blob.mime, "sha256": blob.sha256 or hashlib.sha256(blob.data).hexdigest(),
                     "file_size": size, "id": media_id}, JSON

    def _handler(self):
        graph = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5                                   # a stuck client can't hold a thread

            def do_GET(self):  # noqa: N802
                self._serve()

            def do_POST(self):  # noqa: N802
                self._serve()

            def _serve(self):
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.command, url.path, {k: v[0] for k, v in parse_qs(url.query).items()},
                            {k.lower(): v for k, v in self.headers.items()}, body)
                _decode(seen)
                graph.requests.append(seen)
                if graph.slow:
                    time.sleep(min(graph.slow, 2.0))
                status, answer, mime = graph.answer(seen)
                raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", mime)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass                                  # the client gave up waiting (the timeout tests)

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self) -> "GraphServer":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _decode(seen: Seen) -> None:
    kind = seen.headers.get("content-type", "")
    if kind.startswith(JSON):
        seen.json = json.loads(seen.body)
    elif kind.startswith("multipart/form-data"):
        parsed = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + seen.body)
        for part in parsed.iter_parts():
            name = part.get_param("name", header="content-disposition")
            seen.form[name] = (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))


def _error(code: int, message: str, subcode: int | None = None) -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf123"}
    if subcode:
        error["error_subcode"] = subcode
    return {"error": error}
