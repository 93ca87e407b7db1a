"""The project's Python client against a real peakdesk: a customer and an agent talk, the
customer drops and resumes, errors surface as ClientError."""
from __future__ import annotations

import pytest
import trio

from gateway.client import ClientError, connect
from tests.gateway_cluster import Peakdesk

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("cl"), "pd-test-cl", "cl:")
    yield p
    p.stop()


def test_customer_and_agent_talk_through_the_client(pd):
    async def main():
        token = pd.visitor_token()
        async with connect(pd.url, token) as customer, connect(pd.url, pd.owner_token, encoding="msgpack") as agent:
            session = await customer.open(group="default", entry={"page": "https://shop.example/p/42"})
            assert await customer.send_message(session, "text", {"text": "电饭煲什么时候发货？"}) == 1
            assert await agent.subscribe(session, after=0) == 1
            assert (await agent.next_message(session))["content"] == {"text": "电饭煲什么时候发货？"}
            assert await agent.send_message(session, "text", {"text": "今天发货 ships today"}) == 2
            assert (await customer.next_message(session))["seq"] == 2
            assert (await customer.ping())["t"] == "pong"
            with pytest.raises(ClientError) as err:
                await customer.send_message(session, "text", {"text": ""})
            assert err.value.code == "invalid_frame"
        async with connect(pd.url, pd.owner_token) as agent:  # the agent answers while the customer is away
            await agent.subscribe(session, after=2)
            await agent.send_message(session, "emoji", {"emoji": "👍"})
        async with connect(pd.url, token, resume={session: 2}) as back:
            frame = await back.next_message(session)
            assert (frame["seq"], frame["kind"]) == (3, "emoji") and back.last_seq[session] == 3
    trio.run(main)


def test_a_bad_token_is_a_client_error(pd):
    async def main():
        with pytest.raises(ClientError) as err:
            async with connect(pd.url, "not-a-token"):
                pass
        assert err.value.code == "invalid_token"
    trio.run(main)
