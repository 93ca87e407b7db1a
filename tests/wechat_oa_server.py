"""A local server playing WeChat for the Official Account connector's tests: the API
(/cgi-bin/token, message/custom/send, media/upload, media/get) with its error codes and the
48-hour window, and the platform's side of callbacks — XML, signatures and safe-mode encryption
written here from the documentation's description ("消息加解密说明"), not from the connector's
code, so one shared mistake can't pass unseen.

`with WechatServer() as wx:` — `wx.url` is the API base; `wx.callback(fields, safe=True)` builds
what WeChat would POST; `wx.sent` holds every customer-service message received (raw bytes and
parsed JSON); `wx.fail_send` queues errcodes for the next sends; `wx.mode` switches faults
(`slow`, `down`, `reset`); `wx.offset_s` moves the platform's clock."""
from __future__ import annotations

import base64
import email.parser
import hashlib
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

APP_ID = "wx2c2769f8efd9abc2"
APP_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TOKEN = "spamtest"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ORIGINAL_ID = "gh_10f6c3c3ac5a"
WINDOW_S = 48 * 3600
REPLIES_PER_MESSAGE = 5


# -- the platform's signing and encryption, from the documentation -----------------------------
def wx_signature(*strings: str) -> str:
    """"将token、timestamp、nonce(、msg_encrypt)进行字典序排序, 拼接成一个字符串进行sha1加密"."""
    return hashlib.sha1("".join(sorted(strings)).encode("utf-8")).hexdigest()


def wx_cipher(key_text: str) -> Cipher:
    key = base64.b64decode(key_text + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def wx_encrypt(xml: str, key_text: str = AES_KEY, app_id: str = APP_ID) -> str:
    """FullStr = random(16B) + msg_len(4B, network order) + msg + appid; PKCS#7 to 32 bytes; AES-CBC."""
    msg = xml.encode("utf-8")
    full = os.urandom(16) + len(msg).to_bytes(4, "big") + msg + app_id.encode()
    padder = padding.PKCS7(256).padder()                 # 256 bits: WeChat's 32-byte blocks
    padded = padder.update(full) + padder.finalize()
    encryptor = wx_cipher(key_text).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def wx_decrypt(encrypted: str, key_text: str = AES_KEY) -> tuple[str, str]:
    """(xml, appid) of an encrypted reply."""
    decryptor = wx_cipher(key_text).decryptor()
    padded = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    unpadder = padding.PKCS7(256).unpadder()
    full = unpadder.update(padded) + unpadder.finalize()
    size = int.from_bytes(full[16:20], "big")
    return full[20:20 + size].decode("utf-8"), full[20 + size:].decode()


def wx_xml(fields: dict) -> str:
    """A callback the way WeChat writes it: strings in CDATA, numbers bare."""
    def value(v):
        return str(v) if isinstance(v, int) else f"<![CDATA[{v}]]>"
    return "<xml>" + "".join(f"<{k}>{value(v)}</{k}>" for k, v in fields.items()) + "</xml>"


class WechatServer:
    def __init__(self, lifetime_s: float = 120):
        self.tokens: dict[str, bool] = {}          # token -> still valid
        self.token_calls, self.token_refusals = 0, 0
        self.sent: list[dict] = []                 # {"raw": bytes, "json": dict}
        self.uploads: list[dict] = []
        self.media: dict[str, tuple[str, bytes]] = {}
        self.media_gets = 0
        self.last_seen: dict[str, float] = {}      # openid -> when the customer last wrote
        self.replies: dict[str, int] = {}
        self.fail_send: list[int] = []
        self.mode, self.offset_s = "ok", 0.0
        self.server = _Quiet(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._stop = threading.Timer(lifetime_s, self.server.shutdown)   # never outlives a stuck test

    def now(self) -> float:
        return time.time() + self.offset_s

    # -- the platform's callbacks ----------------------------------------------------------------
    def text(self, openid: str, content: str, msg_id: int = 6054768590064713728, **extra) -> dict:
        return {"ToUserName": ORIGINAL_ID, "FromUserName": openid, "CreateTime": int(self.now()),
                "MsgType": "text", "Content": content, "MsgId": msg_id, **extra}

    def callback(self, fields: dict | str, *, safe: bool = True, timestamp: int | None = None,
                 nonce: str = "1320562132", key: str = AES_KEY, app_id: str = APP_ID) -> tuple[dict, bytes]:
        """(query, body) of WeChat's POST; the customer has written, so the window opens."""
        xml = fields if isinstance(fields, str) else wx_xml(fields)
        if isinstance(fields, dict) and fields.get("MsgType") != "event":
            self.last_seen[str(fields.get("FromUserName"))] = self.now()
            self.replies[str(fields.get("FromUserName"))] = 0
        ts = str(int(self.now()) if timestamp is None else timestamp)
        query = {"signature": wx_signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": fields.get("FromUserName", "") if isinstance(fields, dict) else ""}
        if not safe:
            return query, xml.encode("utf-8")
        encrypted = wx_encrypt(xml, key, app_id)
        query.update(encrypt_type="aes", msg_signature=wx_signature(TOKEN, ts, nonce, encrypted))
        return query, wx_xml({"ToUserName": ORIGINAL_ID, "Encrypt": encrypted}).encode()

    def verification(self, echostr: str = "5838479218127813673") -> dict:
        ts, nonce = str(int(self.now())), "998877"
        return {"signature": wx_signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": echostr}

    def add_media(self, mime: str, data: bytes) -> str:
        media_id = uuid.uuid4().hex + uuid.uuid4().hex[:16]
        self.media[media_id] = (mime, data)
        return media_id

    # -- the API -----------------------------------------------------------------------------------
    def issue_token(self, query: dict) -> dict:
        self.token_calls += 1
        if query.get("appid") != APP_ID:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if query.get("secret") != APP_SECRET:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        token = "ACCESS_TOKEN_" + uuid.uuid4().hex
        self.tokens[token] = True
        return {"access_token": token, "expires_in": 7200}

    def expire_tokens(self) -> None:
        self.tokens = dict.fromkeys(self.tokens, False)

    def token_error(self, query: dict) -> dict | None:
        valid = self.tokens.get(query.get("access_token", ""))
        self.token_refusals += valid is not True
        if valid is None:
            return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
        return None if valid else {"errcode": 42001, "errmsg": "access_token expired"}

    def custom_send(self, raw: bytes) -> dict:
        body = json.loads(raw.decode("utf-8"))
        self.sent.append({"raw": raw, "json": body})
        if self.fail_send:
            code = self.fail_send.pop(0)
            return {"errcode": code, "errmsg": f"simulated {code}"}
        openid = body.get("touser")
        if openid not in self.last_seen:
            return {"errcode": 40003, "errmsg": "invalid openid"}
        if self.now() - self.last_seen[openid] > WINDOW_S:
            return {"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"}
        if self.replies[openid] >= REPLIES_PER_MESSAGE:
            return {"errcode": 45047, "errmsg": "out of response count limit"}
        self.replies[openid] += 1
        return {"errcode": 0, "errmsg": "ok"}

    def upload(self, kind: str, content_type: str, raw: bytes) -> dict:
        message = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        for part in message.get_payload():
            if part.get_param("name", header="content-disposition") == "media":
                data = part.get_payload(decode=True)
                self.uploads.append({"type": kind, "filename": part.get_filename(),
                                     "mime": part.get_content_type(), "data": data})
                media_id = self.add_media(part.get_content_type(), data)
                return {"type": kind, "media_id": media_id, "created_at": int(self.now())}
        return {"errcode": 41005, "errmsg": "media data missing"}

    def __enter__(self) -> "WechatServer":
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self._stop.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.cancel()
        self.server.shutdown()
        self.server.server_close()


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass             # a client that timed out (the `slow` fault) has gone: nothing to report


def _handler(wx: WechatServer):
    class Handler(BaseHTTPRequestHandler):
        timeout = 5                              # a stuck client can't hold a thread for long

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if not self._fault():
                return
            if url.path == "/cgi-bin/token":
                return self._json(wx.issue_token(query))
            if url.path == "/cgi-bin/media/get":
                return self._media(query)
            if url.path.startswith("/video/") and url.path[7:] in wx.media:
                return self._file(*wx.media[url.path[7:]])
            self._json({"errcode": 404, "errmsg": "not found"})

        def do_POST(self):  # noqa: N802
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._fault():
                return
            error = wx.token_error(query)
            if error:
                return self._json(error)
            if url.path == "/cgi-bin/message/custom/send":
                return self._json(wx.custom_send(raw))
            if url.path == "/cgi-bin/media/upload":
                return self._json(wx.upload(query.get("type", ""), self.headers["Content-Type"], raw))
            self._json({"errcode": 404, "errmsg": "not found"})

        def _media(self, query: dict):
            wx.media_gets += 1
            error = wx.token_error(query)
            if error:
                return self._json(error)
            found = wx.media.get(query.get("media_id", ""))
            if found is None:
                return self._json({"errcode": 40007, "errmsg": "invalid media_id"})
            if found[0].startswith("video/"):
                return self._json({"video_url": f"{wx.url}/video/{query['media_id']}"})
            self._file(*found)

        def _fault(self) -> bool:
            if wx.mode == "slow":
                time.sleep(1.0)
            if wx.mode == "down":
                self._send(502, "text/html", b"<html>502 Bad Gateway</html>")
                return False
            if wx.mode == "reset":
                self.close_connection = True
                self.connection.close()
                return False
            return True

        def _json(self, body: dict):
            self._send(200, "application/json; encoding=utf-8", json.dumps(body, ensure_ascii=False).encode())

        def _file(self, mime: str, data: bytes):
            self._send(200, mime, data)

        def _send(self, status: int, content_type: str, raw: bytes):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    return Handler
