"""TEST SCAFFOLDING ONLY: enough of ClickHouse's HTTP interface, over chDB, for
clickhouse-connect's HTTP client — so the `http://` path of storage.events_clickhouse runs
against a real engine in tests, and a test can stop the "server" and start it again.

Run as its own process (chDB allows one data path per process, and the test process has its
own): `python -m tests.clickhouse_http_shim --port P --data DIR`. `ClickHouseShim` starts and
stops it. Served: GET /ping; POST / with the SQL in the `query` URL parameter and/or the body
(ClickHouse concatenates them: statement in the URL, data in the body), `database`,
`default_format`, `param_*` and settings as URL parameters, a Content-Encoding on the body.
Not served: sessions (ignored), external data, progress headers, compressed responses.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

# URL parameters the HTTP layer consumes itself; everything else not param_* is a setting.
TRANSPORT_PARAMS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "wait_end_of_query", "compress", "decompress", "buffer_size", "quota_key",
    "client_protocol_version", "role", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "enable_http_compression", "user", "password",
}
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT_DATA = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
_ERROR_CODE = re.compile(r"Code: (\d+)")


class Engine:
    """One chDB connection; requests take turns (USE and SET are connection state)."""

    def __init__(self, data_dir: str):
        import chdb  # only the shim process opens chDB

        self.conn = chdb.connect(data_dir)
        self.lock = threading.Lock()

    def run(self, sql: str, fmt: str, database: str | None, settings: dict, params: dict) -> bytes:
        with self.lock:
            self.conn.query(f"USE `{database or 'default'}`", "TabSeparated")
            for key, value in settings.items():
                self.conn.query(f"SET {key} = {_quote(value)}", "TabSeparated")
            try:
                return self.conn.query(sql, fmt, params=params).bytes() or b""
            finally:
                for key in settings:
                    self.conn.query(f"SET {key} = DEFAULT", "TabSeparated")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(BaseHTTPRequestHandler):
    engine: Engine  # set on the class by serve()

    def log_message(self, fmt, *args):  # quiet: pytest shows the child's stderr on failure only
        pass

    def do_GET(self):
        if urlparse(self.path).path == "/ping":
            return self._reply(200, b"Ok.\n", {})
        self._query()

    def do_POST(self):
        self._query()

    def _query(self):
        params = dict(parse_qsl(urlparse(self.path).query, keep_blank_values=True))
        try:
            body = _decompress(self._read_body(), self.headers.get("Content-Encoding"))
            data, fmt, summary = self._execute(params, body)
        except Exception as exc:  # the engine's error goes back to the client, as ClickHouse does
            return self._error(exc)
        self._reply(200, data, {"X-ClickHouse-Format": fmt, "X-ClickHouse-Summary": json.dumps(summary)} if fmt
                    else {"X-ClickHouse-Summary": json.dumps(summary)})

    def _execute(self, params: dict, body: bytes) -> tuple[bytes, str | None, dict]:
        database = params.get("database")
        settings = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        sql, data = _split_statement(params.get("query"), body)
        insert = _INSERT_DATA.match(sql)
        if insert and data:
            return self._insert(insert.group(1), insert.group(2), data, database, settings), None, {}
        explicit = _TRAILING_FORMAT.search(sql)
        if explicit:
            return self.engine.run(sql, explicit.group(1), database, settings, binds), explicit.group(1), {}
        # A statement without FORMAT: real ClickHouse names the format only when the statement
        # produced a result set, and clickhouse-connect relies on that. With names, a result
        # set always yields at least a header line; a DDL statement yields nothing.
        fmt = params.get("default_format", "TabSeparated")
        out = self.engine.run(sql, fmt + "WithNames" if fmt == "TabSeparated" else fmt, database, settings, binds)
        if fmt == "TabSeparated":
            return (out.split(b"\n", 1)[1] if out else b""), ("TabSeparated" if out else None), {}
        return out, fmt, {}

    def _insert(self, target: str, fmt: str, data: bytes, database, settings) -> bytes:
        # Like clickhouse-connect's own chdb backend: chDB reads insert data from a file.
        with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as tmp:
            tmp.write(data)
        try:
            clause = (" SETTINGS " + ", ".join(f"{k} = {_quote(v)}" for k, v in settings.items())) if settings else ""
            self.engine.run(f"INSERT INTO {target} FROM INFILE {_quote(tmp.name)}{clause} FORMAT {fmt}",
                            "TabSeparated", database, {}, {})
        finally:
            os.unlink(tmp.name)
        return b""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _error(self, exc: Exception):
        text = str(exc)
        text = text[text.find("Code: "):] if "Code: " in text else f"Code: 1000. DB::Exception: {text}"
        code = _ERROR_CODE.search(text)
        self._reply(500, text.encode() + b"\n", {"X-ClickHouse-Exception-Code": code.group(1) if code else "1000"})

    def _reply(self, status: int, data: bytes, headers: dict):
        self.send_response(status)
        base = {"Content-Type": "text/plain; charset=UTF-8", "Content-Length": str(len(data)),
                "X-ClickHouse-Server-Display-Name": "chdb-shim", "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Query-Id": str(uuid.uuid4()), "Connection": "close"}
        for key, value in {**base, **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _split_statement(query_param: str | None, body: bytes) -> tuple[str, bytes]:
    """(SQL, insert data). With a `query` parameter the body is the data; without one, an
    INSERT's data follows the first line of the body."""
    if query_param:
        if _INSERT_DATA.match(query_param):
            return query_param, body
        return query_param + ("\n" + body.decode() if body else ""), b""
    head, sep, rest = body.partition(b"\n")
    if sep and _INSERT_DATA.match(head.decode(errors="replace")):
        return head.decode(), rest
    return body.decode(), b""


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity" or not body:
        return body
    from clickhouse_connect.driver._backend.chdb_backend import _decompress as decompress

    return decompress(body, encoding)


def serve(port: int, data_dir: str) -> None:
    Handler.engine = Engine(data_dir)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    # SIGTERM: stop serving and close chDB in order, so the data dir is reusable at once.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        Handler.engine.conn.close()


class ClickHouseShim:
    """A shim server process on a fixed port and data dir: stop() makes it unreachable,
    start() brings it back with the same data."""

    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port = Path(data_dir), port
        self.process: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"http://default:@127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ClickHouseShim":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        root = str(Path(__file__).resolve().parents[1])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.clickhouse_http_shim", "--port", str(self.port), "--data", str(self.data_dir)],
            cwd=root, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_until_up(timeout)
        return self

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"shim exited with {self.process.returncode}; see {self.data_dir}.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"shim did not answer on port {self.port} within {timeout}s")
                time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    serve(args.port, args.data)


if __name__ == "__main__":
    main()
