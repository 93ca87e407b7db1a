"""Placement: stable across processes, merchants co-located, even spread, little movement."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from actors.envelope import ActorRef
from actors.placement import PlacementTable

HOSTS = tuple(f"host-{i}" for i in range(4))


def test_owner_is_the_same_in_another_process():
    table = PlacementTable(1, HOSTS)
    refs = [ActorRef("session", "m1", f"s{i}") for i in range(50)]
    code = ("from actors.placement import PlacementTable; from actors.envelope import ActorRef;"
            f"t = PlacementTable(1, {HOSTS!r});"
            "print(','.join(t.owner(ActorRef('session', 'm1', f's{i}')) for i in range(50)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip().split(",") == [table.owner(r) for r in refs]


def test_a_merchants_queues_and_agents_share_a_host():
    table = PlacementTable(1, HOSTS)
    for m in ("m1", "m2", "淘宝店", "shop-42"):
        owners = {table.owner(ActorRef(k, m, i)) for k in ("queue", "agent") for i in ("a", "b", "售前", "after-sales")}
        assert len(owners) == 1


def test_sessions_spread_evenly():
    table = PlacementTable(1, HOSTS)
    counts = Counter(table.owner(ActorRef("session", "m1", f"s{i}")) for i in range(40_000))
    assert set(counts) == set(HOSTS)
    assert max(counts.values()) < 1.2 * 10_000 and min(counts.values()) > 0.8 * 10_000


def test_adding_a_host_moves_only_its_share():
    before, after = PlacementTable(1, HOSTS), PlacementTable(2, HOSTS + ("host-4",))
    refs = [ActorRef("session", "m1", f"s{i}") for i in range(20_000)]
    moved = [r for r in refs if before.owner(r) != after.owner(r)]
    assert all(after.owner(r) == "host-4" for r in moved)
    assert 0.1 < len(moved) / len(refs) < 0.3


def test_a_draining_host_gets_nothing():
    table = PlacementTable(1, HOSTS).with_draining("host-2")
    assert table.version == 2
    assert all(table.owner(ActorRef("session", "m1", f"s{i}")) != "host-2" for i in range(5000))
    with pytest.raises(LookupError, match="host-9"):
        table.with_draining("host-9")


def test_table_round_trips_through_its_dict():
    table = PlacementTable(7, HOSTS, ("host-1",))
    assert PlacementTable.from_dict(table.to_dict()) == table
