"""Attachments in S3: S3AttachmentStore against a real S3-compatible server (SeaweedFS on
127.0.0.1, SigV4 checked), one contract that the local and the S3 store are both held to, and
the settings and CLI flags that choose the store."""
from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from actors.settings import ConfigError, Settings
from storage import crypto
from storage.attachments import (MAX_BYTES, AttachmentRefused, LocalAttachmentStore, SealedAttachmentStore,
                                 open_attachment_store)
from storage.attachments_s3 import S3AttachmentStore
from tests.s3_server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, S3Server

pytestmark = pytest.mark.timeout(120)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
NAME = "小票 双十一 2026-11-11.png"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


def bucket_keys(client) -> list[str]:
    """Every key in the test bucket: a refused upload must add none, under any prefix."""
    keys, token = [], {}
    while True:
        page = client.list_objects_v2(Bucket=BUCKET, **token)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return sorted(keys)
        token = {"ContinuationToken": page["NextContinuationToken"]}


@pytest.fixture
def s3_store(s3):
    # A key prefix of its own per test: the tests share one bucket.
    return S3AttachmentStore(BUCKET, f"t{uuid.uuid4().hex[:8]}/attachments", client=s3.client())


@pytest.fixture(params=["local", "s3", "sealed local", "sealed s3"])
def store(request, tmp_path):
    """(store, what it holds): both implementations, plain and sealed (as gateways use them), for the one contract."""
    if request.param.endswith("local"):
        # Everything under tmp_path, not only the root: a file written outside it shows up too.
        inner, holds = (LocalAttachmentStore(tmp_path / "attachments"),
                        lambda: sorted(str(p) for p in tmp_path.rglob("*") if p.is_file()))
    else:
        s3_store = request.getfixturevalue("s3_store")
        inner, holds = s3_store, lambda: bucket_keys(s3_store.client)
    if request.param.startswith("sealed"):
        ring = crypto.keyring(request.getfixturevalue("redis_client"), request.getfixturevalue("prefix"))
        return SealedAttachmentStore(inner, ring), holds
    return inner, holds


# -- the contract, for both stores ---------------------------------------------------------------

def test_contract_round_trip_keeps_bytes_and_metadata(store):
    store, _ = store

    async def main():
        meta = await store.put("m1", NAME, "image/png", PNG)
        assert set(meta) == {"attachment_id", "name", "mime", "size"}
        assert meta["name"] == NAME and meta["mime"] == "image/png" and meta["size"] == len(PNG)
        assert len(meta["attachment_id"]) == 32 and int(meta["attachment_id"], 16) >= 0
        assert await store.get("m1", meta["attachment_id"]) == (meta, PNG)
        text = "你好，在吗？\n".encode()
        other = await store.put("m1", "问题.txt", "text/plain", text)
        assert other["attachment_id"] != meta["attachment_id"]
        assert await store.get("m1", other["attachment_id"]) == (other, text)
    run(main())


def test_contract_an_id_is_found_only_within_its_merchant(store):
    store, _ = store

    async def main():
        meta = await store.put("m1", NAME, "image/png", PNG)
        aid = meta["attachment_id"]
        for merchant, attachment_id in [
            ("m2", aid),                      # another merchant
            ("m1", uuid.uuid4().hex),         # unknown id
            ("x/../m1", aid), ("../attachments/m1", aid), ("m1/.", aid), ("", aid),  # paths, not ids
            ("m1", f"../m1/{aid}"), ("m1", aid.upper()), ("m1", aid + "/"), ("m1", ".."), ("m1", ""),
        ]:
            with pytest.raises(LookupError):
                await store.get(merchant, attachment_id)
    run(main())


@pytest.mark.parametrize("merchant,name,mime,data,field", [
    ("m1", "a.png", "image/png", b"", "size"),
    ("m1", "a.exe", "application/x-msdownload", b"MZ\x90\x00program", "mime"),
    ("m1", "a.html", "text/html", b"<html><script>x</script>", "mime"),
    ("m1", "a.png", "image/png", b"MZ\x90\x00program", "mime"),          # magic bytes say it is not a PNG
    ("m1", "a.pdf", "application/pdf", PNG, "mime"),
    ("m1", "../../etc/passwd", "image/png", PNG, "name"),
    ("m1", "big.png", "image/png", PNG + b"0" * MAX_BYTES, "size"),
    ("../m2", "a.png", "image/png", PNG, "merchant"),
    ("m1/../../x", "a.png", "image/png", PNG, "merchant"),
])
def test_contract_refused_uploads_store_nothing(store, merchant, name, mime, data, field):
    store, contents = store
    before = contents()
    with pytest.raises(AttachmentRefused) as refused:
        run(store.put(merchant, name, mime, data))
    assert str(refused.value).startswith(f"{field}:")
    assert contents() == before


# -- S3 specifics -------------------------------------------------------------------------------

def test_s3_object_key_and_metadata(s3_store):
    meta = run(s3_store.put("m1", NAME, "image/png", PNG))
    key = f"{s3_store.prefix}/m1/{meta['attachment_id']}"
    assert [k for k in bucket_keys(s3_store.client) if k.startswith(f"{s3_store.prefix}/")] == [key]
    head = s3_store.client.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(PNG)
    assert head["Metadata"]["name"].isascii()  # percent-encoded: S3 metadata is an HTTP header


def test_s3_an_object_written_by_another_tool_is_never_served_as_html(s3_store):
    aid = uuid.uuid4().hex
    s3_store.client.put_object(Bucket=BUCKET, Key=f"{s3_store.prefix}/m1/{aid}", Body=b"<script>x</script>",
                               ContentType="text/html")
    meta, data = run(s3_store.get("m1", aid))
    assert meta["mime"] == "application/octet-stream" and data == b"<script>x</script>"


def test_s3_calls_run_off_the_event_loop(s3_store):
    threads = []

    class Spy:
        def __getattr__(self, name):
            call = getattr(inner, name)
            return lambda *a, **kw: (threads.append(threading.current_thread()), call(*a, **kw))[1]

    inner, s3_store.client = s3_store.client, Spy()

    async def main():
        meta = await s3_store.put("m1", NAME, "image/png", PNG)
        await s3_store.get("m1", meta["attachment_id"])
    run(main())
    assert len(threads) == 2 and threading.main_thread() not in threads


def test_s3_an_outage_or_bad_credentials_is_an_error_not_not_found(s3, s3_store):
    meta = run(s3_store.put("m1", NAME, "image/png", PNG))
    wrong = S3AttachmentStore(BUCKET, s3_store.prefix, client=s3.client(secret="not-the-secret"))
    for call in (wrong.get("m1", meta["attachment_id"]), wrong.put("m1", NAME, "image/png", PNG)):
        with pytest.raises(ClientError) as failed:
            run(call)
        assert not isinstance(failed.value, LookupError)


def test_http_upload_and_download_through_s3(s3_store, redis_url, prefix):
    import redis.asyncio as aioredis

    from gateway.app import create_app
    from gateway.auth import Principal, TokenSigner
    from gateway.context import Services
    from storage.records import RecordStore
    from tests.api_client import SECRET

    signer = TokenSigner(SECRET)

    def auth(merchant):
        token = signer.issue(Principal(kind="visitor", merchant=merchant, id="v1", role="customer"))[0]
        return {"Authorization": f"Bearer {token}"}

    async def main():
        r = aioredis.from_url(redis_url)
        app = create_app({}, services=Services(RecordStore(r, prefix), signer, attachments=s3_store))
        try:
            async with app.test_app() as test_app:
                client = test_app.test_client()
                resp = await client.post("/api/v1/attachments", data=PNG, query_string={"name": NAME},
                                         headers={"Content-Type": "image/png", **auth("m1")})
                assert resp.status_code == 201, await resp.get_data()
                meta = await resp.get_json()
                resp = await client.get(meta["url"], headers=auth("m1"))
                assert resp.status_code == 200 and await resp.get_data() == PNG
                assert resp.headers["Content-Type"] == "image/png"
                assert (await client.get(meta["url"], headers=auth("m2"))).status_code == 404
        finally:
            await r.aclose()
    run(main())


# -- choosing the store ---------------------------------------------------------------------------

def test_settings_pick_the_store(s3, tmp_path):
    local = open_attachment_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalAttachmentStore) and local.root == tmp_path.resolve() / "attachments"
    settings = Settings(data_dir=tmp_path, attachments_url=f"s3://{BUCKET}/pd/attachments/",
                        s3_endpoint_url=s3.endpoint_url, s3_region=REGION,
                        s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY)
    assert SECRET_KEY not in repr(settings)
    store = open_attachment_store(Settings.from_dict(settings.to_dict()))  # as the gateway actor gets it
    assert isinstance(store, S3AttachmentStore) and (store.bucket, store.prefix) == (BUCKET, "pd/attachments")
    meta = run(store.put("m1", NAME, "image/png", PNG))
    assert run(store.get("m1", meta["attachment_id"])) == (meta, PNG)


@pytest.mark.parametrize("kwargs,named", [
    ({"attachments_url": "/var/attachments"}, "attachments_url"),
    ({"attachments_url": "ftp://bucket/x"}, "attachments_url"),
    ({"attachments_url": "s3://"}, "attachments_url"),
    ({"attachments_url": "s3://Bad_Bucket"}, "attachments_url"),
    ({"attachments_url": "s3://key:secret@bucket"}, "attachments_url"),
    ({"attachments_url": "s3://bucket/../other"}, "attachments_url"),
    ({"attachments_url": "s3://bucket/a//b"}, "attachments_url"),
    ({"attachments_url": "s3://bucket/p?x=1"}, "attachments_url"),
    ({"attachments_url": "s3://bucket", "s3_endpoint_url": "minio:9000"}, "s3_endpoint_url"),
    ({"attachments_url": "s3://bucket", "s3_region": "us east"}, "s3_region"),
    ({"s3_endpoint_url": "http://minio:9000"}, "s3_endpoint_url"),   # S3 flags without an s3:// URL
    ({"attachments_url": "s3://bucket", "s3_access_key_id": "AK"}, "s3_secret_access_key"),
])
def test_settings_reject_bad_attachment_settings_naming_them(tmp_path, kwargs, named):
    with pytest.raises(ConfigError) as refused:
        Settings(data_dir=tmp_path, **kwargs)
    assert named in str(refused.value)
    bad = kwargs.get(named)
    if bad is not None and named != "s3_secret_access_key":
        assert repr(bad) in str(refused.value)


def test_up_flags_and_aws_variables_reach_settings(tmp_path, monkeypatch):
    import actors.launcher
    import cli

    seen = []
    monkeypatch.setattr(actors.launcher, "run_until_signalled", lambda settings, *_: seen.append(settings) or 0)
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)  # keep pytest's own Ctrl-C handler
    env = {"AWS_ACCESS_KEY_ID": "AKTEST", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_REGION": "cn-north-1",
           "AWS_SESSION_TOKEN": None, "AWS_DEFAULT_REGION": None}
    args = ["up", "--data-dir", str(tmp_path), "--attachments-url", "s3://shop-files/pd",
            "--s3-endpoint-url", "http://127.0.0.1:9000"]
    done = CliRunner().invoke(cli.main, args, env=env)
    assert done.exit_code == 0, done.output
    (s,) = seen
    assert (s.attachments_s3, s.s3_endpoint_url, s.s3_region) == (("shop-files", "pd"), "http://127.0.0.1:9000",
                                                                    "cn-north-1")
    assert (s.s3_access_key_id, s.s3_secret_access_key) == ("AKTEST", "s3cr3t")
    done = CliRunner().invoke(cli.main, ["up", "--data-dir", str(tmp_path / "d"), "--attachments-url", "s3://X"],
                              env=env)
    assert done.exit_code == 2 and "attachments_url" in done.output and "'s3://X'" in done.output
    assert not (tmp_path / "d").exists()
