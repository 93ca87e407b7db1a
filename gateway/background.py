"""What every gateway runs beside its connections: the job runner (webhook deliveries, tickets'
notices into conversations, messages out through channels; storage/jobs.py), the tickets' SLA
sweeper, and the poller of pulled channels (IMAP). All are safe to run on every gateway at once:
jobs are claimed through a Redis consumer group, deadlines through idempotent updates, polls
under a per-channel lock."""
from __future__ import annotations

import asyncio
import logging

from actors.envelope import ActorRef, Envelope
from storage import jobs
from storage.tickets import TicketStore
from storage.tickets import sla
from storage.webhooks import Deliverer, WebhookStore

from .channels import Channels
from .context import Services

log = logging.getLogger(__name__)


class Background:
    def __init__(self, services: Services, sweep_every_s: float = 1.0):
        records = services.records
        self.services = services
        self.deliver = Deliverer(WebhookStore(records.r, records.p, records.shard))
        self.channels = Channels(services)
        self.jobs = jobs.Dispatcher(records.r, records.p, services.name or "gateway",
                                    {"webhook": self.deliver, "ticket_notice": self._ticket_notice,
                                     "channel_send": self.channels.send},
                                    on_dead={"channel_send": self.channels.gave_up})
        self.tickets = TicketStore(records.r, records.p, shard=records.shard)
        self.sweep_every_s = sweep_every_s
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.jobs.run()),
                       loop.create_task(sla.run(self.tickets, self.services.records, self.sweep_every_s)),
                       loop.create_task(self.channels.poll_forever())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.deliver.aclose()
        await self.channels.close()

    async def _ticket_notice(self, job: dict) -> None:
        """Into the conversation, once the session's host has it (the actor drops a repeat)."""
        target = ActorRef("session", job["merchant"], job["session_id"])
        await self.services.router.send([Envelope(target, "ticket_notice", {
            "job": job["id"], "text": job["text"], "ticket": job["ticket"]})])
