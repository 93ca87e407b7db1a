"""Abuse limits with real Redis, through the Quart app in process: a username locks after 10
failed passwords (unknown usernames the same, so the lock tells nothing), the lock names when to
come back and a success clears the count; uploads are limited per person; new widget visitors
and conversations per client IP — counted together by every gateway, also through a real one."""
from __future__ import annotations

import http.client
import json

import pytest
import trio

from storage.attachments import LocalAttachmentStore
from tests.api_client import PASSWORD, Api, run

from gateway import limits
from gateway.app import create_app
from gateway.auth import TokenSigner
from gateway.context import Services
from gateway.service import load_secret
from tests.api_client import SECRET
from tests.gateway_cluster import Peakdesk, connected

pytestmark = pytest.mark.timeout(300)


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


# -- widget sessions per client IP ------------------------------------------------------------------
def _gateway(api: Api, limit: int, secret: bytes = SECRET):
    """Another gateway on the same Redis (and secret): the Quart app in process."""
    return create_app({}, services=Services(api.records, TokenSigner(secret), widget_sessions_per_ip_per_min=limit))


async def _visitor(client, ip: str, merchant: str = "shop-a"):
    resp = await client.post("/api/v1/auth/visitor", json={"merchant": merchant}, scope_base={"client": (ip, 40000)})
    return resp.status_code, await resp.get_json(), resp.headers.get("Retry-After")


def test_new_visitors_are_limited_per_client_ip_across_gateways(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            await api.tenant("shop-a")
            one, two = _gateway(api, 3), _gateway(api, 3)
            async with one.test_app() as a, two.test_app() as b:
                first, second = a.test_client(), b.test_client()
                assert [(await _visitor(c, "10.0.0.7"))[0] for c in (first, second, first)] == [200] * 3
                for c in (first, second):                                   # the 4th, wherever it asks
                    status, answer, retry_after = await _visitor(c, "10.0.0.7")
                    assert (status, answer["error"]) == (429, "too_many_sessions"), answer
                    assert "try again in" in answer["message"] and 0 < int(retry_after) <= 60
                assert (await _visitor(first, "10.0.0.8"))[0] == 200         # another address: its own count
                assert (await _visitor(first, "10.0.0.7", "no-such-shop"))[0] == 404   # unknown merchant: not counted
            keys = [k.decode() async for k in api.r.scan_iter(match=f"{prefix}limit:widget:*")]
            assert sorted(k.rsplit(":", 1)[0] for k in keys) == [f"{prefix}limit:widget:token"] * 2
            assert not any("10.0.0" in k for k in keys)                     # the address only hashed
            assert f"{prefix}limit:widget:token:{limits.ip_tag(SECRET, '10.0.0.7')}" in keys
    run(main())


def test_an_ipv6_client_counts_by_its_64_and_the_tag_depends_on_the_secret():
    tag = limits.ip_tag
    assert tag(SECRET, "2001:db8:1:2::1") == tag(SECRET, "2001:db8:1:2:ffff::9")   # one /64: one client
    assert tag(SECRET, "2001:db8:1:2::1") != tag(SECRET, "2001:db8:1:3::1")
    assert tag(SECRET, "::ffff:192.0.2.1") == tag(SECRET, "192.0.2.1")
    assert tag(SECRET, "192.0.2.1") != tag(SECRET, "192.0.2.2")
    assert tag(SECRET, "192.0.2.1") != tag(b"z" * 48, "192.0.2.1")               # no table of all IPv4 hashes


# -- against a real gateway -------------------------------------------------------------------------
LIMIT = 4


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("lim"), "pd-test-limits", "lim:",
                 widget_sessions_per_ip_per_min=LIMIT)
    yield p
    p.stop()


@pytest.fixture
def fresh(pd, redis_client):
    """Each test starts with no widget counted (they share the gateway and its minute)."""
    for key in redis_client.scan_iter(match="lim:limit:widget:*"):
        redis_client.delete(key)
    return pd


def _post_from(pd: Peakdesk, ip: str, path: str, body: dict) -> tuple[int, dict, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", pd.port, timeout=10, source_address=(ip, 0))
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), resp.getheader("Retry-After")
    finally:
        conn.close()


def test_a_real_gateway_refuses_the_visitor_past_the_limit_with_retry_after(fresh):
    pd = fresh
    statuses = [_post_from(pd, "127.0.0.1", "/api/v1/auth/visitor", {"merchant": "demo"})[0] for _ in range(LIMIT)]
    assert statuses == [200] * LIMIT
    status, answer, retry_after = _post_from(pd, "127.0.0.1", "/api/v1/auth/visitor", {"merchant": "demo"})
    assert (status, answer["error"]) == (429, "too_many_sessions") and 0 < int(retry_after) <= 60, answer
    status, answer, _ = _post_from(pd, "127.0.0.2", "/api/v1/auth/visitor", {"merchant": "demo"})   # another address
    assert status == 200, answer

    async def second_gateway():   # the same Redis, prefix and secret: the count goes on there
        async with Api(pd.settings.redis_url, pd.settings.prefix) as api:
            app = _gateway(api, LIMIT, load_secret(pd.settings.secret_file))
            async with app.test_app() as test_app:
                return await _visitor(test_app.test_client(), "127.0.0.1", "demo")
    status, answer, _ = run(second_gateway())
    assert (status, answer["error"]) == (429, "too_many_sessions"), answer


def test_a_real_gateway_refuses_the_open_past_the_limit_and_what_is_open_keeps_working(fresh):
    pd = fresh
    token = pd.visitor_token()   # a token is counted apart from conversations

    async def main():
        async with connected(pd.url, token) as customer:
            sessions = []
            for i in range(LIMIT):
                await customer.send({"t": "open", "id": f"o{i}"})
                sessions.append((await customer.until("opened", id=f"o{i}"))["session"])
            await customer.send({"t": "open", "id": "one-too-many"})
            error = await customer.until("error")
            assert (error["code"], error["ref"]) == ("too_many_sessions", "one-too-many"), error
            assert 0 < error["retry_after_s"] <= 60 and "try again in" in error["message"]
            await customer.send({"t": "msg", "cid": "still-here", "session": sessions[0], "kind": "text",
                                 "content": {"text": "还在吗 still there?"}})
            assert (await customer.until("ack", cid="still-here"))["seq"] >= 1
        async with connected(pd.url, token, resume={sessions[1]: 0}) as again:   # resuming is not opening
            await again.until("resumed", session=sessions[1])
            await again.send({"t": "open", "id": "still-too-many"})
            assert (await again.until("error"))["code"] == "too_many_sessions"
    trio.run(main)


def test_the_widget_limit_is_a_setting_and_a_flag_of_up(tmp_path):
    from click.testing import CliRunner

    import cli
    from actors.settings import ConfigError, Settings

    assert Settings(data_dir=tmp_path).widget_sessions_per_ip_per_min == limits.WIDGET_SESSIONS == 30
    raised = Settings(data_dir=tmp_path, widget_sessions_per_ip_per_min=1_000_000)
    assert raised.widget_sessions_per_ip_per_min == 1_000_000
    for bad in (0, -1, "30", 2.5):
        with pytest.raises(ConfigError, match="widget_sessions_per_ip_per_min"):
            Settings(data_dir=tmp_path, widget_sessions_per_ip_per_min=bad)
    result = CliRunner().invoke(cli.main, ["up", "--data-dir", str(tmp_path), "--widget-sessions-per-ip", "0"])
    assert result.exit_code == 2 and "widget_sessions_per_ip_per_min" in result.output, result.output
