"""Who may do what: the permission matrix, as data. Every REST endpoint and websocket action
names its Action; `docs/permissions.md` is rendered from this table (a test keeps them equal)."""
from __future__ import annotations

import enum
from typing import Mapping


class Role(str, enum.Enum):
    OWNER = "owner"
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"
    API = "api"   # a merchant's back-end system, by API key


class Action(str, enum.Enum):
    MERCHANT_READ = "merchant.read"
    MERCHANT_UPDATE = "merchant.update"
    MERCHANT_ROTATE_SECRET = "merchant.rotate_secret"
    AGENT_LIST = "agent.list"
    AGENT_READ = "agent.read"
    AGENT_CREATE = "agent.create"
    AGENT_UPDATE = "agent.update"
    AGENT_UPDATE_ROLE = "agent.update_role"
    AGENT_DISABLE = "agent.disable"
    AGENT_SET_PASSWORD = "agent.set_password"
    SELF_READ = "self.read"
    SELF_UPDATE_PASSWORD = "self.update_password"
    SELF_SET_STATUS = "self.set_status"
    GROUP_LIST = "group.list"
    GROUP_READ = "group.read"
    GROUP_CREATE = "group.create"
    GROUP_UPDATE = "group.update"
    GROUP_DELETE = "group.delete"
    CUSTOMER_LIST = "customer.list"
    CUSTOMER_READ = "customer.read"
    CUSTOMER_SET_ATTRIBUTES = "customer.set_attributes"
    QUICK_REPLY_LIST = "quick_reply.list"
    QUICK_REPLY_CREATE_SHARED = "quick_reply.create_shared"
    QUICK_REPLY_UPDATE_SHARED = "quick_reply.update_shared"
    QUICK_REPLY_DELETE_SHARED = "quick_reply.delete_shared"
    QUICK_REPLY_CREATE_OWN = "quick_reply.create_own"
    QUICK_REPLY_UPDATE_OWN = "quick_reply.update_own"
    QUICK_REPLY_DELETE_OWN = "quick_reply.delete_own"
    API_KEY_LIST = "api_key.list"
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    AUDIT_READ = "audit.read"
    CONVERSATION_ACCEPT = "conversation.accept"
    CONVERSATION_SEND = "conversation.send"
    CONVERSATION_TRANSFER = "conversation.transfer"
    CONVERSATION_CLOSE = "conversation.close"
    CONVERSATION_NOTE = "conversation.note"
    CONVERSATION_VIEW_OWN = "conversation.view_own"
    CONVERSATION_VIEW_ALL = "conversation.view_all"
    CONVERSATION_TAKE_OVER = "conversation.take_over"
    TEAM_CHAT = "team.chat"
    KB_READ = "kb.read"
    KB_WRITE = "kb.write"
    REPORT_READ = "report.read"
    EVENTS_EXPORT = "events.export"
    COMMERCE_READ = "commerce.read"
    COMMERCE_WRITE = "commerce.write"
    TICKET_READ = "ticket.read"
    TICKET_WRITE = "ticket.write"
    WEBHOOK_MANAGE = "webhook.manage"
    CHANNEL_MANAGE = "channel.manage"


O, A, S, G, P = Role.OWNER, Role.ADMIN, Role.SUPERVISOR, Role.AGENT, Role.API
_PEOPLE = frozenset({O, A, S, G})
_MANAGERS = frozenset({O, A})
_LEADS = frozenset({O, A, S})

MATRIX: Mapping[Action, frozenset[Role]] = {
    Action.MERCHANT_READ: _PEOPLE | {P},
    Action.MERCHANT_UPDATE: _MANAGERS,
    Action.MERCHANT_ROTATE_SECRET: frozenset({O}),
    Action.AGENT_LIST: _PEOPLE,
    Action.AGENT_READ: _PEOPLE,
    Action.AGENT_CREATE: _MANAGERS,
    Action.AGENT_UPDATE: _MANAGERS,
    Action.AGENT_UPDATE_ROLE: _MANAGERS,
    Action.AGENT_DISABLE: _MANAGERS,
    Action.AGENT_SET_PASSWORD: _MANAGERS,
    Action.SELF_READ: _PEOPLE,
    Action.SELF_UPDATE_PASSWORD: _PEOPLE,
    Action.SELF_SET_STATUS: _PEOPLE,
    Action.GROUP_LIST: _PEOPLE | {P},
    Action.GROUP_READ: _PEOPLE | {P},
    Action.GROUP_CREATE: _MANAGERS,
    Action.GROUP_UPDATE: _MANAGERS,
    Action.GROUP_DELETE: _MANAGERS,
    Action.CUSTOMER_LIST: _PEOPLE | {P},
    Action.CUSTOMER_READ: _PEOPLE | {P},
    Action.CUSTOMER_SET_ATTRIBUTES: _LEADS | {P},
    Action.QUICK_REPLY_LIST: _PEOPLE,
    Action.QUICK_REPLY_CREATE_SHARED: _LEADS,
    Action.QUICK_REPLY_UPDATE_SHARED: _LEADS,
    Action.QUICK_REPLY_DELETE_SHARED: _LEADS,
    Action.QUICK_REPLY_CREATE_OWN: _PEOPLE,
    Action.QUICK_REPLY_UPDATE_OWN: _PEOPLE,
    Action.QUICK_REPLY_DELETE_OWN: _PEOPLE,
    Action.API_KEY_LIST: _MANAGERS,
    Action.API_KEY_CREATE: _MANAGERS,
    Action.API_KEY_REVOKE: _MANAGERS,
    Action.AUDIT_READ: _MANAGERS,
    Action.CONVERSATION_ACCEPT: _PEOPLE,
    Action.CONVERSATION_SEND: _PEOPLE,
    Action.CONVERSATION_TRANSFER: _PEOPLE,
    Action.CONVERSATION_CLOSE: _PEOPLE,
    Action.CONVERSATION_NOTE: _PEOPLE,
    Action.CONVERSATION_VIEW_OWN: _PEOPLE,
    Action.CONVERSATION_VIEW_ALL: _LEADS,
    Action.CONVERSATION_TAKE_OVER: _LEADS,
    Action.TEAM_CHAT: _PEOPLE,
    Action.KB_READ: _PEOPLE | {P},
    Action.KB_WRITE: _LEADS | {P},
    Action.REPORT_READ: _LEADS | {P},
    Action.EVENTS_EXPORT: _MANAGERS | {P},
    Action.COMMERCE_READ: _PEOPLE | {P},
    Action.COMMERCE_WRITE: _MANAGERS | {P},
    Action.TICKET_READ: _PEOPLE | {P},
    Action.TICKET_WRITE: _PEOPLE | {P},
    Action.WEBHOOK_MANAGE: _MANAGERS,
    Action.CHANNEL_MANAGE: _MANAGERS,
}

# Which roles a role may give (when creating an agent or changing its role) — and so which
# agents it may change at all: an admin can't make an owner, nor touch one.
_ASSIGNABLE = {O: frozenset({O, A, S, G}), A: frozenset({A, S, G})}


class Forbidden(Exception):
    """403: the role may not do the action."""

    def __init__(self, action: Action | str, role: str):
        action = Action(action)
        super().__init__(f"role {role} may not {action.value}")
        self.action, self.role = action, role


def allowed(role: str, action: Action | str) -> bool:
    try:
        return Role(role) in MATRIX[Action(action)]
    except ValueError:  # not a role of the matrix (a customer token): nothing here
        return False


def require(role: str, action: Action | str) -> None:
    if not allowed(role, action):
        raise Forbidden(action, role)


def is_lead(role: str) -> bool:
    """Supervisors and up: they see and steer every conversation of their merchant."""
    return allowed(role, Action.CONVERSATION_VIEW_ALL)


def may_assign_role(actor_role: str, target_role: str) -> bool:
    try:
        return Role(target_role) in _ASSIGNABLE.get(Role(actor_role), frozenset())
    except ValueError:
        return False


def matrix_markdown() -> str:
    roles = list(Role)
    lines = ["| action | " + " | ".join(r.value for r in roles) + " |",
             "|---|" + "---|" * len(roles)]
    for action in Action:
        cells = " | ".join("✓" if r in MATRIX[action] else "—" for r in roles)
        lines.append(f"| `{action.value}` | {cells} |")
    return "\n".join(lines)
