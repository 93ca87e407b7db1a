"""The permission matrix against the rules it was written from (issue 3), stated as rules rather
than cells — test_permissions.py checks the cells; a cell changed there and here in the same way
would still have to keep these rules."""
from __future__ import annotations

import pytest

from gateway.permissions import MATRIX, Action, Forbidden, Role, allowed, matrix_markdown, may_assign_role, require

PEOPLE = {Role.OWNER, Role.ADMIN, Role.SUPERVISOR, Role.AGENT}
API_MAY = {"customer.list", "customer.read", "customer.set_attributes", "merchant.read", "group.list", "group.read",
           "kb.read", "kb.write",        # a merchant's systems keep its knowledge base in sync
           "report.read", "events.export",  # and feed its own BI
           "commerce.read", "commerce.write",   # and push products and orders
           "ticket.read", "ticket.write"}       # and open and follow tickets from their own systems


def actions_of(role: Role) -> set[str]:
    return {a.value for a in Action if allowed(role, a)}


def test_every_action_has_a_row_and_nothing_else_does():
    assert set(MATRIX) == set(Action)
    assert all(isinstance(v, frozenset) and v <= set(Role) for v in MATRIX.values())


def test_owner_may_do_everything():
    assert actions_of(Role.OWNER) == {a.value for a in Action}


def test_admin_may_do_everything_but_rotate_the_secret():
    assert {a.value for a in Action} - actions_of(Role.ADMIN) == {"merchant.rotate_secret"}


def test_api_keys_reach_only_customers_the_merchant_groups_and_the_knowledge_base():
    assert actions_of(Role.API) == API_MAY


def test_api_key_management_and_the_audit_trail_are_for_owners_and_admins():
    for a in Action:
        if a.value.startswith("api_key.") or a is Action.AUDIT_READ:
            assert MATRIX[a] == {Role.OWNER, Role.ADMIN}, a


def test_only_leads_see_every_conversation_and_take_them_over():
    assert MATRIX[Action.CONVERSATION_VIEW_ALL] == {Role.OWNER, Role.ADMIN, Role.SUPERVISOR}
    assert MATRIX[Action.CONVERSATION_TAKE_OVER] == {Role.OWNER, Role.ADMIN, Role.SUPERVISOR}


def test_every_person_may_work_conversations_and_look_after_themselves():
    for a in Action:
        if a.value.startswith(("conversation.", "self.", "team.")) and a not in (Action.CONVERSATION_VIEW_ALL,
                                                                                  Action.CONVERSATION_TAKE_OVER):
            assert MATRIX[a] == PEOPLE, a


def test_agents_change_only_their_own_things():
    writes = {a for a in actions_of(Role.AGENT) if not a.endswith((".read", ".list"))}
    # tickets are the team's shared work: agents open them and move them on, as they do conversations
    assert all(a.startswith(("self.", "conversation.", "team.", "ticket.")) or a.endswith("_own") for a in writes), writes


def test_supervisors_manage_no_people_groups_or_merchant_settings():
    forbidden = {a.value for a in Action if a.value.split(".")[0] in ("agent", "group", "merchant", "api_key")
                 and not a.value.endswith((".read", ".list"))}
    assert not forbidden & actions_of(Role.SUPERVISOR)


def test_the_api_role_is_never_a_person_and_nobody_assigns_it():
    assert not any(may_assign_role(r, Role.API) for r in Role)
    assert not any(may_assign_role(Role.API, r) for r in Role)


def test_nobody_assigns_a_role_above_their_own():
    rank = {Role.OWNER: 4, Role.ADMIN: 3, Role.SUPERVISOR: 2, Role.AGENT: 1}
    for actor in rank:
        for target in rank:
            if may_assign_role(actor, target):
                assert rank[target] <= rank[actor] and allowed(actor, Action.AGENT_UPDATE_ROLE)


@pytest.mark.parametrize("role", [Role.OWNER, "owner"])
def test_enum_members_and_their_values_are_the_same_role(role):
    assert allowed(role, Action.MERCHANT_ROTATE_SECRET) and allowed(role, "merchant.rotate_secret")


def test_forbidden_names_the_action_and_the_role():
    with pytest.raises(Forbidden) as e:
        require("agent", Action.AGENT_CREATE)
    assert e.value.action is Action.AGENT_CREATE and e.value.role == "agent"
    assert "agent.create" in str(e.value) and "agent" in str(e.value)


def test_an_unknown_action_is_refused():
    assert not allowed("owner", "merchant.delete")


def test_the_rendered_table_has_a_row_per_action_and_a_column_per_role():
    lines = matrix_markdown().splitlines()
    assert len(lines) == 2 + len(Action)
    assert all(line.count("|") == len(Role) + 2 for line in lines)
