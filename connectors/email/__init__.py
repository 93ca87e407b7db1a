"""The email channel: IMAP in, SMTP out (connector.py); entry point `connectors.email:EmailConnector`."""
from .config import EmailConfig
from .connector import EmailConnector
from .imap import MailboxError

__all__ = ["EmailConfig", "EmailConnector", "MailboxError"]
