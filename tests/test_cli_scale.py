"""`peakdesk scale / rebalance / drain / restart --rolling / status` from another shell against
a running `peakdesk up`: hosts and gateways come and go live, the status shows them, and
SIGINT still leaves nothing behind — including what the other shell added."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.test_cli_up import PEAKDESK, env, first_health_answer, interrupt_and_expect_nothing_left, start_up

pytestmark = pytest.mark.timeout(400)


def peakdesk(tmp_path, *args: str) -> dict:
    done = subprocess.run([PEAKDESK, *args, "--data-dir", str(tmp_path / "data")], capture_output=True, text=True,
                          env=env(), timeout=180)
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout)


def test_scaling_a_running_system_from_another_shell(tmp_path):
    proc, port = start_up(tmp_path, "--hosts", "1", "--bot-workers", "0")
    try:
        assert first_health_answer(proc, port, 200)[0] == 200
        assert peakdesk(tmp_path, "scale", "--hosts", "3") == {"hosts_added": ["host-1", "host-2"]}
        status = peakdesk(tmp_path, "status", "--json")
        assert [h["host"] for h in status["hosts"]] == ["host-0", "host-1", "host-2"]
        assert all(h["state"] == "up" and h["node"] for h in status["hosts"])
        assert peakdesk(tmp_path, "rebalance") == {"activations_moved": 0}   # nothing lives yet
        assert peakdesk(tmp_path, "drain", "host-2") == {"hosts_removed": ["host-2"], "activations_moved": 0}
        out = peakdesk(tmp_path, "scale", "--gateways", "2")
        assert out["gateways_added"] == ["gateway-1"]
        assert peakdesk(tmp_path, "restart", "--rolling", "--gateways-only") == {"restarted": ["gateway-0", "gateway-1"]}
        assert first_health_answer(proc, port, 200)[0] == 200       # gateway-0 is back on its port
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = peakdesk(tmp_path, "status", "--json")
            if [h["host"] for h in status["hosts"]] == ["host-0", "host-1"]:
                break
            time.sleep(1)
        assert [h["host"] for h in status["hosts"]] == ["host-0", "host-1"]
        assert sorted(status["gateways"]) == ["gateway-0", "gateway-1"]
        interrupt_and_expect_nothing_left(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_operating_without_a_running_system_says_so(tmp_path):
    done = subprocess.run([PEAKDESK, "scale", "--hosts", "2", "--data-dir", str(tmp_path)], capture_output=True,
                          text=True, env=env(), timeout=60)
    assert done.returncode == 1 and "no running peakdesk found" in done.stderr
    done = subprocess.run([PEAKDESK, "scale", "--data-dir", str(tmp_path)], capture_output=True, text=True, env=env(),
                          timeout=60)
    assert done.returncode == 2 and "--hosts" in done.stderr
    done = subprocess.run([PEAKDESK, "start"], capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 2 and "--head" in done.stderr
