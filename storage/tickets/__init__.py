"""Tickets (工单): departments, a configurable status flow, SLA with reminders and escalation."""
from .config import PRIORITIES, TicketSettings, ticket_settings
from .store import TicketError, TicketStore, public, summary

__all__ = ["PRIORITIES", "TicketError", "TicketSettings", "TicketStore", "public", "summary", "ticket_settings"]
