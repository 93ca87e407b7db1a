"""Abuse limits with real Redis, through the Quart app in process: a username locks after 10
failed passwords (unknown usernames the same, so the lock tells nothing), the lock names when to
come back and a success clears the count; uploads are limited per person."""
from __future__ import annotations

from storage.attachments import LocalAttachmentStore
from tests.api_client import PASSWORD, Api, run

from gateway.app import create_app
from gateway.auth import TokenSigner
from gateway.context import Services
from tests.api_client import SECRET


def test_a_username_locks_after_ten_failed_passwords_and_unlocks_on_success(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            await api.tenant("shop-a")

            async def login(username, password):
                return await api.call("POST", "/api/v1/auth/login",
                                      json={"merchant": "shop-a", "username": username, "password": password})
            for _ in range(3):
                assert (await login("agent1", "wrong"))[0] == 401
            assert (await login("agent1", PASSWORD))[0] == 200          # a success clears the count
            for name in ("agent1", "ghost-user"):                       # an unknown username locks the same way
                for _ in range(10):
                    assert (await login(name, "wrong"))[0] == 401
                status, answer = await login(name, PASSWORD)
                assert (status, answer["error"]) == (429, "too_many_attempts") and "try again in" in answer["message"]
            resp = await api.client.post("/api/v1/auth/login", json={"merchant": "shop-a", "username": "agent1",
                                                                     "password": PASSWORD})
            assert resp.status_code == 429 and 0 < int(resp.headers["Retry-After"]) <= 900
            assert (await login("owner1", PASSWORD))[0] == 200          # other usernames are not affected
    run(main())


def test_uploads_are_limited_per_person(redis_url, prefix, tmp_path):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            app = create_app({}, services=Services(api.records, TokenSigner(SECRET),
                                                   attachments=LocalAttachmentStore(tmp_path)))
            async with app.test_app() as test_app:
                client = test_app.test_client()

                async def upload(token):
                    resp = await client.post("/api/v1/attachments?name=a.txt", data=b"hello",
                                             headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
                    return resp.status_code
                assert [await upload(a.tokens["agent"]) for _ in range(60)] == [201] * 60
                assert await upload(a.tokens["agent"]) == 429
                assert await upload(a.tokens["supervisor"]) == 201       # another person's own count
    run(main())
