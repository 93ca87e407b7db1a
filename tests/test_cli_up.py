"""`peakdesk up` on an empty data dir, as an operator runs it: healthy within 60 s, visible to
`peakdesk status` from another shell, and gone without a trace after Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from storage.redis_server import free_port

PEAKDESK = str(Path(sys.executable).with_name("peakdesk"))
pytestmark = pytest.mark.timeout(240)


def healthz(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def env() -> dict:
    """As a user runs it: no master key in the environment, so `up` makes the data dir's own."""
    return {**{k: v for k, v in os.environ.items() if k != "PEAKDESK_MASTER_KEY"}, "RAY_USAGE_STATS_ENABLED": "0"}


def start_up(tmp_path, *flags) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([PEAKDESK, "up", "--data-dir", str(tmp_path / "data"), "--port", str(port), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(), text=True)
    return proc, port


def first_health_answer(proc, port, want_status: int, within: float = 60) -> tuple[int, dict] | None:
    t0, answer = time.monotonic(), None
    while time.monotonic() - t0 < within and proc.poll() is None:
        answer = healthz(port)
        if answer and answer[0] == want_status:
            break
        time.sleep(0.5)
    return answer


def interrupt_and_expect_nothing_left(proc) -> None:
    """SIGINT to `peakdesk up`: it exits 0 and every process it started (Redis, Ray's, the
    actors) is gone within 30 s."""
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) > 3  # redis, Ray's processes, the actors
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0
    deadline = time.monotonic() + 30
    while (alive := [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, [psutil.Process(p).cmdline() for p in alive]


def test_up_is_healthy_within_a_minute_and_sigint_leaves_nothing_behind(tmp_path):
    proc, port = start_up(tmp_path, "--hosts", "2")
    try:
        answer = first_health_answer(proc, port, 200)
        assert answer == (200, {"status": "ok", "components": {"ray": "ok", "redis": "ok", "clickhouse": "ok"}}), \
            proc.stdout.read() if proc.poll() is not None else answer

        deadline = time.monotonic() + 20
        while True:   # the demo merchant's audit events, written at start, drain into ClickHouse
            status = subprocess.run([PEAKDESK, "status", "--data-dir", str(tmp_path / "data"), "--json"],
                                    capture_output=True, text=True, env=env(), timeout=60)
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            if report["outbox"]["events"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [h["host"] for h in report["hosts"]] == ["host-0", "host-1"]
        assert all(h["state"] == "up" for h in report["hosts"])
        assert report["outbox"]["events"] == 0

        login_file = tmp_path / "data" / "demo-login.txt"
        assert oct(login_file.stat().st_mode & 0o777) == "0o600"
        master_key = tmp_path / "data" / "master.key"          # wraps the merchants' data keys
        assert oct(master_key.stat().st_mode & 0o777) == "0o600" and len(master_key.read_text().strip()) == 44
        creds = dict(line.split(": ", 1) for line in login_file.read_text().splitlines())
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/login", method="POST",
                                     data=json.dumps(creds).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            token = json.loads(resp.read())["token"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/agents", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert [a["username"] for a in json.loads(resp.read())["items"]] == ["owner"]

        interrupt_and_expect_nothing_left(proc)
        assert not (tmp_path / "data" / "run.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("args,named", [
    (["--port", "70000"], "port"),
    (["--redis-url", "mysql://x"], "redis_url"),
    (["--hosts", "0"], "hosts"),
    (["--writers", "2"], "writers"),
])
def test_up_refuses_bad_flags_naming_them_and_starts_nothing(tmp_path, args, named):
    done = subprocess.run([PEAKDESK, "up", "--data-dir", str(tmp_path / "d"), *args],
                          capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 2
    assert named in done.stderr
    assert not (tmp_path / "d").exists()


def test_status_without_a_running_system_says_so(tmp_path):
    done = subprocess.run([PEAKDESK, "status", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          env=env(), timeout=60)
    assert done.returncode == 2
    assert "no running peakdesk" in done.stderr


def test_up_names_an_unreachable_clickhouse_in_healthz(tmp_path):
    proc, port = start_up(tmp_path, "--hosts", "1", "--clickhouse-url", f"http://127.0.0.1:{free_port()}")
    try:
        status, body = first_health_answer(proc, port, 503)
        assert status == 503 and body["status"] == "degraded"
        assert body["components"]["ray"] == "ok" and body["components"]["redis"] == "ok"
        assert body["components"]["clickhouse"].startswith("error: SinkUnavailable: ClickHouse at http://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_with_an_unreachable_redis_says_so_and_starts_nothing(tmp_path):
    done = subprocess.run([PEAKDESK, "up", "--data-dir", str(tmp_path), "--redis-url", f"redis://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:" in done.stderr


def login(port: int, creds: dict) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/login", method="POST",
                                 data=json.dumps(creds).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_up_again_on_the_same_data_dir_keeps_merchants_and_logins(tmp_path):
    versions, master_keys = [], []
    for round_ in range(2):
        proc, port = start_up(tmp_path, "--hosts", "1")
        try:
            assert first_health_answer(proc, port, 200)[0] == 200
            creds = dict(line.split(": ", 1) for line in (tmp_path / "data" / "demo-login.txt").read_text().splitlines())
            assert login(port, creds) == 200  # the same password both times: nothing was recreated
            status = subprocess.run([PEAKDESK, "status", "--data-dir", str(tmp_path / "data"), "--json"],
                                    capture_output=True, text=True, env=env(), timeout=60)
            versions.append(json.loads(status.stdout)["placement_version"])
            master_keys.append((tmp_path / "data" / "master.key").read_text())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=90) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert versions[1] == versions[0] + 1
    assert master_keys[0] == master_keys[1]     # kept: what the first run sealed, the second reads
