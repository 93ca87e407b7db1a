"""The outbox writer as a Ray actor's body. In embedded mode it is also the only process that
opens chDB, so health checks, reports and tests query ClickHouse through it."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from .writer import OutboxWriter

log = logging.getLogger(__name__)


class WriterService:
    def __init__(self, name: str, redis_url: str, dsn: str, database: str, shards: list[int], prefix: str):
        logging.basicConfig(level=logging.INFO)
        self.writer = OutboxWriter(redis_url, dsn, shards, database=database, prefix=prefix, name=name,
                                   claim_idle_ms=0)
        self.ready = asyncio.get_running_loop().create_task(self._start())
        self.task: asyncio.Task | None = None

    async def _start(self) -> None:
        # Redis only: ClickHouse may be down at start; then the outbox waits and /healthz says so.
        await self.writer.open()
        self.task = asyncio.get_running_loop().create_task(self.writer.run())

    async def wait_ready(self) -> dict:
        await self.ready
        return self.writer.stats()

    async def ping(self) -> None:
        await self.writer.ping()

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return await self.writer.query(sql, parameters)

    async def export(self, sql: str, parameters: dict[str, Any] | None, fmt: str) -> bytes:
        return await self.writer.export(sql, parameters, fmt)

    async def statistics(self) -> dict:
        return self.writer.stats()

    async def stop(self) -> dict:
        """Finish the batch in hand, then stop; what is left stays in the outbox."""
        self.writer.stop()
        if self.task is not None:
            await self.task
        await self.writer.close()
        return self.writer.stats()
