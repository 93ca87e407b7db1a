"""A local server playing WeCom (qyapi.weixin.qq.com) for the wecom_kf connector's tests, on
127.0.0.1 only, shut down by its context manager or after MAX_LIFETIME_S at the latest.

It speaks WeCom's protocol as documented: gettoken (tokens that expire), kf/sync_msg (cursors,
pages, has_more, the callback Token), kf/send_msg (the 48-hour / 5-message window, msgid rules,
2048-byte text), media/upload (multipart "media"), media/get, kf/customer/batchget. It also
plays WeCom's side of callbacks: the encrypted, signed POST and the GET verification, built from
the documentation's algorithm (加解密方案说明) with its own padding code, not the connector's.
Tests inject faults (`fail_next`) and read what it received (`sent`, `uploads`, `syncs`)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlparse

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CORP_ID = "ww5823bf96d3bd56c7"
SECRET = "Kf0Secret1234567890abcdefghijklmnopqrstuvw"
TOKEN = "QDG6eKtoken"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
MAX_LIFETIME_S = 60
SLOW_S = 1.5
WINDOW_S, WINDOW_MESSAGES = 48 * 3600, 5
_MSGID = re.compile(r"^[0-9a-zA-Z_-]{1,32}$")


def pkcs7(data: bytes, block: int = 32) -> bytes:
    n = block - len(data) % block
    return data + bytes([n]) * n


def wecom_encrypt(msg: bytes, receive_id: str, encoding_aes_key: str, pad=pkcs7) -> str:
    """The documentation's recipe: AES-256-CBC (key = base64(EncodingAESKey + "="), IV = key[:16])
    over random(16) + len(msg) as 4 big-endian bytes + msg + receiveid, PKCS#7 to 32-byte blocks."""
    key = base64.b64decode(encoding_aes_key + "=")
    plain = pad(os.urandom(16) + struct.pack(">I", len(msg)) + msg + receive_id.encode())
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def wecom_sign(token: str, timestamp: str, nonce: str, ciphertext: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, ciphertext])).encode()).hexdigest()


def kf_event_xml(open_kfid: str, msg_token: str, corp_id: str = CORP_ID, created: int | None = None) -> bytes:
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{created or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{msg_token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>").encode()


class WeCom:
    """`with WeCom() as wecom:` — `wecom.url` is the api_base to configure."""

    def __init__(self, page_size: int = 1000):
        self.lock = threading.Lock()
        self.clock = time.time
        self.page_size = page_size
        self.tokens: dict[str, bool] = {}                 # access token -> still valid
        self.msg_tokens: set[str] = set()                 # callback Tokens handed out
        self.queues: dict[str, list[dict]] = {}           # open_kfid -> every message, oldest first
        self.media: dict[str, tuple[bytes, str, str]] = {}
        self.windows: dict[tuple[str, str], list] = {}    # (open_kfid, user) -> [last write, sent since]
        self.session_state: dict[tuple[str, str], int] = {}
        self.nicknames: dict[str, str] = {}
        self.faults: dict[str, list] = {}
        self.sent, self.uploads, self.syncs, self.gettokens = [], [], [], 0
        self.msgids: set[tuple[str, str]] = set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "WeCom":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._deadline = threading.Timer(MAX_LIFETIME_S, self.httpd.shutdown)
        self._deadline.daemon = True
        self._deadline.start()
        return self

    def __exit__(self, *exc) -> None:
        self._deadline.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- WeCom's side of callbacks ----------------------------------------------------------------
    def callback(self, open_kfid: str, *, timestamp: int | None = None, nonce: str = "1372623149",
                 xml: bytes | None = None, **encrypt) -> tuple[dict, bytes]:
        """(query, body) of the POST WeCom makes when `open_kfid` has news."""
        msg_token = f"ENC{os.urandom(12).hex()}"
        self.msg_tokens.add(msg_token)
        ciphertext = wecom_encrypt(xml if xml is not None else kf_event_xml(open_kfid, msg_token),
                                   encrypt.get("receive_id", CORP_ID), encrypt.get("aes_key", AES_KEY),
                                   encrypt.get("pad", pkcs7))
        ts = str(timestamp if timestamp is not None else int(time.time()))
        body = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt>" \
               f"<AgentID><![CDATA[]]></AgentID></xml>"
        query = {"msg_signature": wecom_sign(encrypt.get("token", TOKEN), ts, nonce, ciphertext), "timestamp": ts, "nonce": nonce}
        return query, body.encode()

    def verification(self, echo: str, timestamp: int | None = None) -> dict:
        ts, nonce = str(timestamp if timestamp is not None else int(time.time())), "263014780"
        echostr = wecom_encrypt(echo.encode(), CORP_ID, AES_KEY)
        return {"msg_signature": wecom_sign(TOKEN, ts, nonce, echostr), "timestamp": ts, "nonce": nonce, "echostr": echostr}

    # -- the customers' side ------------------------------------------------------------------------
    def customer_writes(self, open_kfid: str, user: str, msgtype: str, body: dict, *, origin: int = 3,
                        send_time: int | None = None) -> str:
        with self.lock:
            msgid = f"msg{len(sum(self.queues.values(), [])) + 1:04d}{os.urandom(4).hex()}"
            at = send_time if send_time is not None else int(self.clock())
            msg = {"msgid": msgid, "open_kfid": open_kfid, "external_userid": user, "send_time": at,
                   "origin": origin, "msgtype": msgtype, msgtype: body}
            if origin == 5:
                msg["servicer_userid"] = "zhangsan"
            self.queues.setdefault(open_kfid, []).append(msg)
            if origin == 3:
                self.windows[(open_kfid, user)] = [at, 0]
        return msgid

    def add_media(self, data: bytes, content_type: str, filename: str) -> str:
        media_id = f"MEDIA_{len(self.media) + 1}_{os.urandom(6).hex()}"
        self.media[media_id] = (data, content_type, filename)
        return media_id

    def fail_next(self, path: str, *faults) -> None:
        """Faults for the next calls of `path`: an errcode, ("http", status), "slow" or "garbled"."""
        self.faults.setdefault(path, []).extend(faults)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = {t: False for t in self.tokens}

    # -- the API ----------------------------------------------------------------------------------
    def gettoken(self, q: dict, _body: bytes) -> dict:
        if q.get("corpid") != CORP_ID:
            return {"errcode": 40013, "errmsg": "invalid corpid"}
        if q.get("corpsecret") != SECRET:
            return {"errcode": 40001, "errmsg": "invalid credential"}
        with self.lock:
            self.gettokens += 1
            token = f"ACCESS_{self.gettokens}_{os.urandom(8).hex()}"
            self.tokens[token] = True
        return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}

    def sync_msg(self, _q: dict, body: bytes) -> dict:
        req = json.loads(body)
        self.syncs.append(req)
        if req.get("token") and req["token"] not in self.msg_tokens:
            return {"errcode": 95007, "errmsg": "invalid msg token"}
        queue = self.queues.get(req.get("open_kfid"))
        if queue is None:
            return {"errcode": 95000, "errmsg": "invalid open_kfid"}
        start = _cursor_index(req.get("cursor", ""), req["open_kfid"])
        if start is None or not 1 <= req.get("limit", 1000) <= 1000:
            return {"errcode": 40058, "errmsg": "invalid cursor or limit"}
        page = queue[start:start + min(self.page_size, req.get("limit", 1000))]
        end = start + len(page)
        return {"errcode": 0, "errmsg": "ok", "next_cursor": _cursor(req["open_kfid"], end),
                "has_more": int(end < len(queue)), "msg_list": page}

    def send_msg(self, _q: dict, body: bytes) -> dict:
        req = json.loads(body)
        kfid, user, msgid, msgtype = req.get("open_kfid"), req.get("touser"), req.get("msgid"), req.get("msgtype")
        if kfid not in self.queues:
            return {"errcode": 95000, "errmsg": "invalid open_kfid"}
        if (kfid, user) not in self.windows:
            return {"errcode": 40096, "errmsg": "invalid external userid"}
        if msgid is not None and not (isinstance(msgid, str) and _MSGID.match(msgid)):
            return {"errcode": 40058, "errmsg": "invalid msgid"}
        error = self._content_error(msgtype, req.get(msgtype))
        if error:
            return error
        with self.lock:
            if (kfid, msgid) in self.msgids:   # a stand-in code: WeCom documents the rejection, not its errcode
                return {"errcode": 40058, "errmsg": "msgid duplicated"}
            window = self.windows[(kfid, user)]
            if self.session_state.get((kfid, user), 1) == 3:
                return {"errcode": 95018, "errmsg": "send msg session status invalid"}
            if self.clock() - window[0] > WINDOW_S:
                return {"errcode": 95002, "errmsg": "send msg time limit"}
            if window[1] >= WINDOW_MESSAGES:
                return {"errcode": 95001, "errmsg": "send msg count limit"}
            window[1] += 1
            self.msgids.add((kfid, msgid))
            self.sent.append(req)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid or f"auto{len(self.sent)}"}

    def _content_error(self, msgtype: str, content) -> dict | None:
        if msgtype == "text":
            text = content.get("content") if isinstance(content, dict) else None
            if not isinstance(text, str) or not text:
                return {"errcode": 44004, "errmsg": "empty content"}
            if len(text.encode()) > 2048:
                return {"errcode": 45002, "errmsg": "content size out of limit"}
            return None
        if msgtype in ("image", "voice", "video", "file"):
            media_id = content.get("media_id") if isinstance(content, dict) else None
            return None if media_id in {u["media_id"] for u in self.uploads} else {"errcode": 40007, "errmsg": "invalid media_id"}
        return {"errcode": 40008, "errmsg": "invalid message type"}

    def upload(self, q: dict, body: bytes, content_type: str) -> dict:
        if q.get("type") not in ("image", "voice", "video", "file"):
            return {"errcode": 40005, "errmsg": "invalid type"}
        part = _multipart_media(body, content_type)
        if part is None:
            return {"errcode": 41005, "errmsg": "media data missing"}
        media_id = f"UP_{len(self.uploads) + 1}_{os.urandom(6).hex()}"
        self.uploads.append({"type": q["type"], "media_id": media_id, **part})
        return {"errcode": 0, "errmsg": "", "type": q["type"], "media_id": media_id, "created_at": str(int(time.time()))}

    def batchget(self, _q: dict, body: bytes) -> dict:
        ids = json.loads(body).get("external_userid_list") or []
        return {"errcode": 0, "errmsg": "ok", "invalid_external_userid": [i for i in ids if i not in self.nicknames],
                "customer_list": [{"external_userid": i, "nickname": self.nicknames[i], "avatar": "", "gender": 0}
                                  for i in ids if i in self.nicknames]}

    def token_error(self, q: dict) -> dict | None:
        valid = self.tokens.get(q.get("access_token", ""))
        if valid is None:
            return {"errcode": 40014 if q.get("access_token") else 41001, "errmsg": "invalid access_token"}
        return None if valid else {"errcode": 42001, "errmsg": "access_token expired"}


def _cursor(open_kfid: str, index: int) -> str:
    return base64.urlsafe_b64encode(f"{open_kfid}:{index}".encode()).decode()


def _cursor_index(cursor: str, open_kfid: str) -> int | None:
    if not cursor:
        return 0
    try:
        kfid, index = base64.urlsafe_b64decode(cursor).decode().rsplit(":", 1)
        return int(index) if kfid == open_kfid else None
    except ValueError:
        return None


def _multipart_media(body: bytes, content_type: str) -> dict | None:
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, data = part.strip(b"\r\n").partition(b"\r\n\r\n")
        headers = head.decode("utf-8")
        if re.search(r'name="media"', headers):
            filename = re.search(r'filename="([^"]*)"', headers)
            mime = re.search(r"(?im)^content-type:\s*(\S+)", headers)
            return {"filename": filename.group(1) if filename else "", "mime": mime.group(1) if mime else "",
                    "data": data}
    return None


def _handler(wecom: WeCom):
    routes_post = {"/cgi-bin/kf/sync_msg": wecom.sync_msg, "/cgi-bin/kf/send_msg": wecom.send_msg,
                   "/cgi-bin/kf/customer/batchget": wecom.batchget}

    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def log_message(self, *args) -> None:   # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            url, q = self._url()
            if self._fault(url.path):
                return
            if url.path == "/cgi-bin/gettoken":
                return self._json(wecom.gettoken(q, b""))
            if url.path == "/cgi-bin/media/get":
                return self._token_checked(q, lambda: self._media(q))
            self._json({"errcode": 404, "errmsg": "no such API"}, status=404)

        def do_POST(self) -> None:  # noqa: N802
            url, q = self._url()
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self._fault(url.path):
                return
            if url.path == "/cgi-bin/media/upload":
                return self._token_checked(q, lambda: self._json(wecom.upload(q, body, self.headers.get("Content-Type", ""))))
            if url.path in routes_post:
                return self._token_checked(q, lambda: self._json(routes_post[url.path](q, body)))
            self._json({"errcode": 404, "errmsg": "no such API"}, status=404)

        def _url(self):
            url = urlparse(self.path)
            return url, {k: v[0] for k, v in parse_qs(url.query).items()}

        def _fault(self, path: str) -> bool:
            with wecom.lock:
                fault = wecom.faults.get(path, []).pop(0) if wecom.faults.get(path) else None
            if fault is None:
                return False
            if fault == "slow":
                time.sleep(SLOW_S)
                return False
            if fault == "garbled":
                self._raw(200, b"<html>502 Bad Gateway</html>", "text/html")
            elif isinstance(fault, tuple):
                self._raw(fault[1], b"upstream error", "text/plain")
            else:
                self._json({"errcode": fault, "errmsg": f"injected {fault}"})
            return True

        def _token_checked(self, q: dict, then) -> None:
            error = wecom.token_error(q)
            return self._json(error) if error else then()

        def _media(self, q: dict) -> None:
            found = wecom.media.get(q.get("media_id", ""))
            if found is None:
                return self._json({"errcode": 40007, "errmsg": "invalid media_id"})
            data, content_type, filename = found
            disposition = f'attachment; filename="{filename}"' if filename.isascii() \
                else f"attachment; filename*=UTF-8''{quote(filename)}"
            self._raw(200, data, content_type, {"Content-Disposition": disposition})

        def _json(self, doc: dict, status: int = 200) -> None:
            self._raw(status, json.dumps(doc, ensure_ascii=False).encode(), "application/json; charset=utf-8")

        def _raw(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
