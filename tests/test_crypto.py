"""storage/crypto.py against a real Redis: master keys from the environment or a file (bad ones
named), data keys created once per merchant, sealed values bound to their merchant, rotation and
master-key rewrap with nothing unreadable on the way, shredding for good."""
from __future__ import annotations

import base64
import os
import stat
import threading

import pytest
import redis

from actors.settings import ConfigError, Settings
from storage import crypto


def b64(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


@pytest.fixture
def ring(redis_client, prefix):
    return crypto.Keyring(redis_client, prefix)


def test_master_keys_come_from_the_environment_first_then_the_file_and_bad_ones_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv(crypto.MASTER_ENV)
    path = tmp_path / "master.key"
    assert crypto.ensure_master_key_file(path) is True
    assert crypto.ensure_master_key_file(path) is False          # never overwritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(crypto.master_keys_from(path)) == 1
    first, second = b64(), b64()
    path.write_text(f"# rotated 2026-11-01\n{first}\n{second}\n")
    assert crypto.master_keys_from(path) == [base64.b64decode(first), base64.b64decode(second)]
    for text, named in ((f"{b64(16)}\n", "16 bytes"), ("not base64!\n", "not base64"), ("# empty\n", "no master key")):
        path.write_text(text)
        with pytest.raises(crypto.CryptoError, match=named):
            crypto.master_keys_from(path)
    with pytest.raises(crypto.CryptoError, match="master_key_file: no such file"):
        crypto.master_keys_from(tmp_path / "missing")
    with pytest.raises(ConfigError, match="master_key_file"):
        Settings(data_dir=tmp_path, master_key_file=str(tmp_path / "missing"))
    monkeypatch.setenv(crypto.MASTER_ENV, f"{first},{second}")
    assert crypto.master_keys_from(tmp_path / "missing") == [base64.b64decode(first), base64.b64decode(second)]


def test_sealed_values_open_only_for_their_merchant_and_plain_ones_pass_through(ring, redis_client, prefix):
    text = "收货人 张三 13800138000 address 上海".encode()
    sealed = ring.seal("m1", text)
    assert text not in sealed and ring.open("m1", sealed) == text
    ring.seal("m2", b"m2 has keys of its own")
    with pytest.raises(crypto.CryptoError, match="does not open"):
        ring.open("m2", sealed)                       # moved under another merchant: refused
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(crypto.CryptoError):
        ring.open("m1", tampered)
    assert ring.open("m1", b'{"written": "before encryption"}') == b'{"written": "before encryption"}'
    payload = {"kind": "text", "content": {"text": "我的快递"}, "from": {"kind": "customer", "name": "张三"},
               "seq": 3, "response_ms": 1200, "comment": "", "tags": ["vip"],
               "changes": {"status": "已婚 married", "via": "ticket T000001"}}
    sealed_payload = ring.seal_payload("m1", payload)
    assert sealed_payload["kind"] == "text" and sealed_payload["seq"] == 3 and sealed_payload["response_ms"] == 1200
    assert sealed_payload["from"]["kind"] == "customer" and sealed_payload["comment"] == ""
    assert sealed_payload["changes"]["via"] == "ticket T000001"            # how a conversation was read
    assert sealed_payload["changes"]["status"].startswith("pdenc:")       # a customer attribute called status
    assert all(v.startswith("pdenc:") for v in (sealed_payload["content"]["text"], sealed_payload["from"]["name"],
                                                sealed_payload["tags"]))
    assert ring.open_payload("m1", sealed_payload) == payload
    assert crypto.Keyring(redis_client, prefix).open_payload("m1", sealed_payload) == payload   # another process


def test_a_merchants_first_keys_are_made_once_even_by_racing_processes(redis_url, redis_client, prefix):
    rings = [crypto.Keyring(redis.Redis.from_url(redis_url), prefix) for _ in range(8)]
    sealed = [None] * 8

    def seal(i):
        sealed[i] = rings[i].seal("m1", f"value {i}".encode())
    threads = [threading.Thread(target=seal, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(redis_client.hkeys(f"{prefix}keys:m1")) == [b"current", b"idx", b"v1"]
    assert [rings[0].open("m1", s) for s in sealed] == [f"value {i}".encode() for i in range(8)]


def test_rotation_seals_new_data_with_the_new_version_and_old_versions_keep_opening(ring, redis_client, prefix):
    old = ring.seal("m1", b"before")
    other = crypto.Keyring(redis_client, prefix)      # another process, which cached version 1
    assert other.open("m1", old) == b"before"
    assert ring.rotate("m1") == 2
    new = ring.seal("m1", b"after")
    assert new[4:8] == (2).to_bytes(4, "big") and old[4:8] == (1).to_bytes(4, "big")
    assert other.open("m1", new) == b"after"          # a version it had not seen: fetched at once
    assert ring.open("m1", old) == b"before"
    assert ring.status("m1") == {"merchant": "m1", "current": 2, "versions": [1, 2], "on_current_master": True,
                                 "unknown_master": []}


def test_a_new_master_key_rewraps_every_data_key_and_the_old_one_can_go(ring, redis_client, prefix, monkeypatch):
    sealed = ring.seal("m1", b"kept through the master change")
    old = os.environ[crypto.MASTER_ENV]
    new = b64()
    monkeypatch.setenv(crypto.MASTER_ENV, f"{new},{old}")
    both = _ring_with(redis_client, prefix, crypto.master_keys_from(None))
    assert both.status("m1")["on_current_master"] is False
    assert both.rewrap("m1") == 2                     # v1 and the index key
    assert both.status("m1")["on_current_master"] is True
    only_new = _ring_with(redis_client, prefix, [base64.b64decode(new)])
    assert only_new.open("m1", sealed) == b"kept through the master change"
    only_old = _ring_with(redis_client, prefix, [base64.b64decode(old)])
    with pytest.raises(crypto.CryptoError, match="master key this process does not have"):
        only_old.open("m1", sealed)


def _ring_with(client, prefix, masters):
    ring = crypto.Keyring(client, prefix)
    ring.masters = masters
    return ring


def test_shredding_makes_everything_sealed_unreadable_and_nothing_new_sealable(ring, redis_client, prefix):
    blob = ring.seal("m1", "李四 13900139000".encode())
    field = ring.seal_value("m1", "李四")
    other = crypto.Keyring(redis_client, prefix)
    assert other.open("m1", blob)
    ring.shred("m1")
    other.refresh()                                   # what every process does each REFRESH_S
    for r in (ring, other, crypto.Keyring(redis_client, prefix)):
        with pytest.raises(crypto.Shredded):
            r.open("m1", blob)
        assert r.open_value("m1", field) == crypto.ERASED
        with pytest.raises(crypto.Shredded):
            r.seal("m1", b"new")
        assert r.seal_payload("m1", {"kind": "text", "content": {"text": "new"}}) == \
            {"kind": "text", "content": {"text": crypto.ERASED}}
    with pytest.raises(crypto.Shredded):
        ring.rotate("m1")
    assert ring.status("m1")["shredded_at"] > 0
    assert ring.open("m2", ring.seal("m2", b"others unaffected")) == b"others unaffected"
