"""WhatsApp Business Cloud API channel: entry point `whatsapp = "connectors.whatsapp:WhatsApp"`.

config.py the channel's settings · inbound.py webhook verification, signature, parsing ·
models.py the notification's shape · media_in.py customer media → attachments · outbound.py
messages → Cloud API objects · graph.py the Graph API calls · tokens.py the access token ·
errors.py what each error code means · connector.py the `Connector` tying them together.
"""
from .config import WhatsAppConfig
from .connector import WhatsApp

__all__ = ["WhatsApp", "WhatsAppConfig"]
