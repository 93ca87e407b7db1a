"""Attachments over HTTP: upload, download, limits, type checks, tenancy."""
from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.auth import Principal, TokenSigner
from gateway.context import Services
from storage import crypto
from storage.attachments import LocalAttachmentStore, SealedAttachmentStore
from storage.records import RecordStore
from tests.api_client import SECRET, run

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


class Client:
    def __init__(self, redis_url, prefix, tmp_path):
        self.redis_url, self.prefix, self.root = redis_url, prefix, tmp_path

    async def __aenter__(self):
        import redis.asyncio as aioredis

        self.r = aioredis.from_url(self.redis_url)
        self.signer = TokenSigner(SECRET)
        self.plain = LocalAttachmentStore(self.root)
        self.store = SealedAttachmentStore(self.plain, crypto.keyring(self.r, self.prefix))   # as gateways have it
        app = create_app({}, services=Services(RecordStore(self.r, self.prefix), self.signer, attachments=self.store))
        self._ctx = app.test_app()
        self.client = (await self._ctx.__aenter__()).test_client()
        return self

    async def __aexit__(self, *exc):
        await self._ctx.__aexit__(*exc)
        await self.r.aclose()

    def token(self, merchant: str) -> str:
        return self.signer.issue(Principal(kind="visitor", merchant=merchant, id="v1", role="customer"))[0]

    async def upload(self, merchant, data, mime, name="小票.png"):
        resp = await self.client.post("/api/v1/attachments", data=data, query_string={"name": name},
                                      headers={"Content-Type": mime, "Authorization": f"Bearer {self.token(merchant)}"})
        return resp.status_code, await resp.get_json()

    async def download(self, merchant, attachment_id):
        resp = await self.client.get(f"/api/v1/attachments/{attachment_id}",
                                     headers={"Authorization": f"Bearer {self.token(merchant)}"})
        return resp.status_code, await resp.get_data(), resp.headers


def test_upload_then_download_the_same_bytes(redis_url, prefix, tmp_path):
    async def main():
        async with Client(redis_url, prefix, tmp_path) as c:
            status, meta = await c.upload("m1", PNG, "image/png")
            assert status == 201 and meta["size"] == len(PNG) and meta["mime"] == "image/png"
            status, data, headers = await c.download("m1", meta["attachment_id"])
            assert status == 200 and data == PNG and headers["Content-Type"] == "image/png"
            assert headers["X-Content-Type-Options"] == "nosniff"
    run(main())


def test_another_merchant_cannot_fetch_it(redis_url, prefix, tmp_path):
    async def main():
        async with Client(redis_url, prefix, tmp_path) as c:
            _, meta = await c.upload("m1", PNG, "image/png")
            status, _, _ = await c.download("m2", meta["attachment_id"])
            assert status == 404
    run(main())


@pytest.mark.parametrize("data,mime,name,status,field", [
    (b"MZ\x90\x00program", "application/x-msdownload", "a.exe", 422, "mime"),
    (b"<html><script>x</script>", "text/html", "a.html", 422, "mime"),
    (b"MZ\x90\x00program", "image/png", "a.png", 422, "mime"),
    (b"", "image/png", "a.png", 422, "size"),
    (PNG, "image/png", "../../etc/passwd", 422, "name"),
    (PNG, "image/png", "", 422, "name"),
    (b"\x89PNG\r\n\x1a\n" + b"0" * (20 * 1024 * 1024), "image/png", "big.png", 413, None),
])
def test_refused_uploads_name_the_problem_and_store_nothing(redis_url, prefix, tmp_path, data, mime, name, status, field):
    async def main():
        async with Client(redis_url, prefix, tmp_path) as c:
            got, body = await c.upload("m1", data, mime, name)
            assert got == status, body
            if field:
                assert body["field"] == field
            assert not list(tmp_path.rglob("*"))
    run(main())


def test_upload_needs_a_token(redis_url, prefix, tmp_path):
    async def main():
        async with Client(redis_url, prefix, tmp_path) as c:
            resp = await c.client.post("/api/v1/attachments", data=PNG, headers={"Content-Type": "image/png"})
            assert resp.status_code == 401
    run(main())


def test_files_and_their_names_are_encrypted_at_rest_and_erased_with_the_merchants_keys(redis_url, prefix, tmp_path):
    secret = PNG + "身份证 110101199003071234 ID card".encode()

    async def main():
        async with Client(redis_url, prefix, tmp_path) as c:
            status, meta = await c.upload("m1", secret, "image/png", name="张三身份证.png")
            assert status == 201
            on_disk = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())
            for clear in (b"110101199003071234", "张三身份证".encode(), b"\x89PNG", b"image/png"):
                assert clear not in on_disk
            status, data, headers = await c.download("m1", meta["attachment_id"])
            assert status == 200 and data == secret and headers["Content-Type"] == "image/png"
            legacy = await c.plain.put("m1", "before.png", "image/png", PNG)   # stored before sealing existed
            status, data, _ = await c.download("m1", legacy["attachment_id"])
            assert status == 200 and data == PNG
            c.store.ring.shred("m1")
            status, _, _ = await c.download("m1", meta["attachment_id"])
            assert status == 404
    run(main())
