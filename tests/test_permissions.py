"""The permission matrix cell by cell, against a table written out here independently."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.permissions import Action, Forbidden, allowed, matrix_markdown, may_assign_role, require

ROLES = ("owner", "admin", "supervisor", "agent", "api")
# action -> roles allowed, spelled out (O A S G P)
EXPECTED = """
merchant.read              O A S G P
merchant.update            O A
merchant.rotate_secret     O
agent.list                 O A S G
agent.read                 O A S G
agent.create               O A
agent.update               O A
agent.update_role          O A
agent.disable              O A
agent.set_password         O A
self.read                  O A S G
self.update_password       O A S G
self.set_status            O A S G
group.list                 O A S G P
group.read                 O A S G P
group.create               O A
group.update               O A
group.delete               O A
customer.list              O A S G P
customer.read              O A S G P
customer.set_attributes    O A S P
quick_reply.list           O A S G
quick_reply.create_shared  O A S
quick_reply.update_shared  O A S
quick_reply.delete_shared  O A S
quick_reply.create_own     O A S G
quick_reply.update_own     O A S G
quick_reply.delete_own     O A S G
api_key.list               O A
api_key.create             O A
api_key.revoke             O A
audit.read                 O A
conversation.accept        O A S G
conversation.send          O A S G
conversation.transfer      O A S G
conversation.close         O A S G
conversation.note          O A S G
conversation.view_own      O A S G
conversation.view_all      O A S
conversation.take_over     O A S
team.chat                  O A S G
kb.read                    O A S G P
kb.write                   O A S P
report.read                O A S P
events.export              O A P
commerce.read              O A S G P
commerce.write             O A P
ticket.read                O A S G P
ticket.write               O A S G P
webhook.manage             O A
channel.manage             O A
"""
LETTER = dict(zip("OASGP", ROLES))
TABLE = {line.split()[0]: {LETTER[c] for c in line.split()[1:]} for line in EXPECTED.strip().splitlines()}
CELLS = [(action, role) for action in TABLE for role in ROLES]


def test_the_table_here_covers_every_action():
    assert set(TABLE) == {a.value for a in Action}


@pytest.mark.parametrize("action,role", CELLS, ids=[f"{a}-{r}" for a, r in CELLS])
def test_cell(action, role):
    assert allowed(role, action) == (role in TABLE[action])
    if role in TABLE[action]:
        require(role, action)
    else:
        with pytest.raises(Forbidden, match=f"role {role} may not {re.escape(action)}"):
            require(role, action)


@pytest.mark.parametrize("role", ["customer", "visitor", "root", ""])
def test_roles_outside_the_matrix_may_do_nothing(role):
    assert not any(allowed(role, a) for a in Action)


ASSIGN = {"owner": {"owner", "admin", "supervisor", "agent"}, "admin": {"admin", "supervisor", "agent"},
          "supervisor": set(), "agent": set(), "api": set()}


@pytest.mark.parametrize("actor,target", [(a, t) for a in ROLES for t in ("owner", "admin", "supervisor", "agent", "god")])
def test_role_assignment_cell(actor, target):
    assert may_assign_role(actor, target) == (target in ASSIGN[actor])


def test_the_documented_matrix_is_the_enforced_one():
    doc = (Path(__file__).parent.parent / "docs" / "permissions.md").read_text(encoding="utf-8")
    assert matrix_markdown() in doc
