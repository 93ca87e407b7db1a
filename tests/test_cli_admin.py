"""`peakdesk merchant|agent|apikey` against a real Redis, as an operator runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storage import outbox
from tests.api_client import Api, run

PEAKDESK = str(Path(sys.executable).with_name("peakdesk"))


def pd(redis_url: str, prefix: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PEAKDESK, *args, "--redis-url", redis_url, "--prefix", prefix], input=stdin,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "USER": "ops"})


def test_operator_sets_up_a_merchant_with_an_agent_and_an_api_key(redis_url, prefix):
    made = pd(redis_url, prefix, "merchant", "create", "tmall-shop", "--name", "天猫旗舰店")
    assert made.returncode == 0, made.stderr
    assert "customer signing secret (shown once" in made.stdout
    listed = pd(redis_url, prefix, "merchant", "list", "--json")
    assert [m["merchant_id"] for m in json.loads(listed.stdout)] == ["tmall-shop"]

    added = pd(redis_url, prefix, "agent", "add", "--merchant", "tmall-shop", "--username", "xiaomei",
               "--name", "小美", "--role", "supervisor")
    assert added.returncode == 0, added.stderr
    password = added.stdout.rsplit("password (shown once): ", 1)[1].strip()
    agents = json.loads(pd(redis_url, prefix, "agent", "list", "--merchant", "tmall-shop", "--json").stdout)
    assert [(a["username"], a["role"], a["name"]) for a in agents] == [("xiaomei", "supervisor", "小美")]

    key = pd(redis_url, prefix, "apikey", "create", "--merchant", "tmall-shop", "--name", "OMS sync")
    assert key.returncode == 0, key.stderr
    plaintext = key.stdout.rsplit("api key (shown once): ", 1)[1].strip()

    async def check():
        async with Api(redis_url, prefix) as api:
            status, body = await api.call("POST", "/api/v1/auth/login",
                                          json={"merchant": "tmall-shop", "username": "xiaomei", "password": password})
            assert status == 200 and body["principal"]["role"] == "supervisor"
            status, _ = await api.call("GET", "/api/v1/customers", plaintext)
            assert status == 200
            events = [e for _, f in await api.r.xrange(f"{prefix}outbox:0") for e in outbox.decode_batch(f[b"b"])]
            audit = [(e.type, e.payload["actor"]) for e in events if e.type.startswith("audit.")]
            assert ("audit.merchant.created", "cli:ops") in audit and ("audit.agent.created", "cli:ops") in audit
            assert ("audit.api_key.created", "cli:ops") in audit
    run(check())

    disabled = pd(redis_url, prefix, "agent", "disable", "--merchant", "tmall-shop", agents[0]["agent_id"])
    assert disabled.returncode == 0 and json.loads(disabled.stdout)["enabled"] is False
    by_name = pd(redis_url, prefix, "agent", "disable", "--merchant", "tmall-shop", "--agent", "xiaomei")
    assert by_name.returncode == 0 and json.loads(by_name.stdout)["agent_id"] == agents[0]["agent_id"]
    also = pd(redis_url, prefix, "merchant", "create", "--id", "jd-shop", "--name", "京东店")
    assert also.returncode == 0, also.stderr


def test_operator_mistakes_are_named_and_change_nothing(redis_url, prefix):
    assert pd(redis_url, prefix, "merchant", "create", "Bad Id!", "--name", "x").returncode != 0
    bad = pd(redis_url, prefix, "merchant", "create", "Bad Id!", "--name", "x")
    assert "merchant_id" in bad.stderr
    assert pd(redis_url, prefix, "merchant", "create", "m1", "--name", "One").returncode == 0
    dup = pd(redis_url, prefix, "merchant", "create", "m1", "--name", "Again")
    assert dup.returncode == 1 and "m1" in dup.stderr
    weak = pd(redis_url, prefix, "agent", "add", "--merchant", "m1", "--username", "a", "--name", "A",
              "--password-stdin", stdin="short\n")
    assert weak.returncode == 1 and "password" in weak.stderr
    nobody = pd(redis_url, prefix, "agent", "disable", "--merchant", "m1", "ffffffffffff")
    assert nobody.returncode == 1 and "not found" in nobody.stderr
    listed = json.loads(pd(redis_url, prefix, "merchant", "list", "--json").stdout)
    assert [(m["merchant_id"], m["name"]) for m in listed] == [("m1", "One")]
    assert json.loads(pd(redis_url, prefix, "agent", "list", "--merchant", "m1", "--json").stdout) == []
