"""The wire format between hosts: round trip, and bad input named."""
from __future__ import annotations

import msgpack
import pytest

from actors.envelope import ActorRef, Envelope, ProtocolError, decode_batch, encode_batch


def test_batch_round_trip_keeps_order_and_unicode():
    envs = [Envelope(ActorRef("session", "m1", f"s{i}"), "message", {"text": "你好 hello", "n": i}, "gw@1", i)
            for i in range(5)]
    version, back = decode_batch(encode_batch(envs, 3))
    assert version == 3
    assert [(e.target, e.body, e.n, e.origin) for e in back] == [(e.target, e.body, e.n, e.origin) for e in envs]


def test_actor_key_parses_back():
    ref = ActorRef("queue", "m1", "售后:vip")
    assert ActorRef.parse(ref.key) == ref


@pytest.mark.parametrize("kind,merchant,id_,word", [("", "m", "x", "kind"), ("session", "a:b", "x", "merchant"),
                                                   ("session", "m", "", "id")])
def test_bad_actor_refs_are_named(kind, merchant, id_, word):
    with pytest.raises(ProtocolError, match=word):
        ActorRef(kind, merchant, id_)


@pytest.mark.parametrize("payload,word", [
    (b"\xc1garbage", "msgpack"),
    (msgpack.packb([9, 0, []]), "batch must be"),
    (msgpack.packb([1, 0, [["o", 1, "session", "m", "s"]]]), "array of 8"),
    (msgpack.packb([1, 0, [["o", 1, "session", "m", "s", "message", [1], 0]]]), "body must be a map"),
])
def test_bad_batches_are_refused_with_the_reason(payload, word):
    with pytest.raises(ProtocolError, match=word):
        decode_batch(payload)
