"""Operating a real two-node Ray cluster on this machine (tests/multinode_scenario.py, in a
process of its own): conversations run throughout while hosts are scaled out across both
nodes, activations rebalanced, a host scaled in, and one node drained and removed from Ray —
no message lost, none twice, every conversation still reachable, in order."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)


def test_scaling_and_draining_a_node_under_traffic_loses_and_repeats_nothing(tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "tests.multinode_scenario", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=540)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in report.items() if k != "traffic"}, indent=1)[:4000])
    assert done.returncode == 0, done.stderr[-3000:]
    node_a, node_b = report["nodes"][0], report["nodes"][1]
    assert set(report["hosts_at_start"].values()) == {node_a, node_b}          # spread over both nodes
    assert len(report["hosts_after_scale_out"]) == 4
    assert set(report["hosts_after_scale_out"].values()) == {node_a, node_b}
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["rebalance"]["result"] > 0                                    # old conversations moved too
    drained = steps["drain node B"]["result"]
    assert drained["hosts_removed"] and drained["activations_moved"] > 0
    assert len(steps["node B removed from Ray"]["result"]) == 1
    remaining = set(report["hosts_at_end"].values())
    assert len(remaining) == 1 and remaining < {node_a, node_b}
    assert report["traffic"]["rounds"] == 40 and "error" not in report["traffic"]
    assert report["final_round"]["wrong"] == {}                                # every session reachable, count right
    events = report["events"]
    assert events["rows"] == events["expected"] == events["distinct_ids"]     # none lost, none twice
    assert events["sessions"] == 200 and events["bad_sessions"] == 0           # each in order
