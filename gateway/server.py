"""Hypercorn serving the gateway app on the current event loop (inside the gateway's Ray actor),
with a socket bound before start() returns: the port is known (port 0 picks a free one) and a
port already in use is an error at once, naming the address."""
from __future__ import annotations

import asyncio
import logging

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import wrap_app

log = logging.getLogger(__name__)


WS_MAX_MESSAGE_BYTES = 1024 * 1024


class GatewayStartError(RuntimeError):
    """The gateway could not listen; the message names the address and the reason."""


class GatewayServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 8080, certfile: str | None = None,
                 keyfile: str | None = None):
        self.app, self.host, self.port = app, host, port
        self.certfile, self.keyfile = certfile, keyfile   # both: https:// and wss:// only
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.bound_port: int | None = None

    async def start(self, timeout: float = 10.0) -> None:
        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.accesslog = None
        config.graceful_timeout = 5.0
        # Frames up to 64 KiB are served; up to this size they are refused with an error frame
        # (the connection lives); past it Hypercorn closes the connection (1009) unread.
        config.websocket_max_message_size = WS_MAX_MESSAGE_BYTES
        if self.certfile:
            config.certfile, config.keyfile = self.certfile, self.keyfile
        try:
            sockets = config.create_sockets()
        except OSError as exc:
            raise GatewayStartError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self.bound_port = (sockets.secure_sockets or sockets.insecure_sockets)[0].getsockname()[1]
        app = wrap_app(self.app, config.wsgi_max_body_size, "asgi")
        self._task = asyncio.get_running_loop().create_task(
            worker_serve(app, config, sockets=sockets, shutdown_trigger=self._stop.wait))
        await self._wait_listening(timeout)

    async def _wait_listening(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._task.done():
                raise GatewayStartError(f"gateway on {self.host}:{self.bound_port} stopped: {self._task.exception()!r}")
            try:
                _, writer = await asyncio.open_connection(self.host, self.bound_port)
                writer.close()
                return
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise GatewayStartError(f"gateway on {self.host}:{self.bound_port} did not start in {timeout}s")
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
