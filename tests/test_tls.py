"""TLS on the gateway: with a certificate and key the gateway serves https:// and wss:// only —
REST, the websocket protocol and the pages — with the key's certificate, and plain http gets
nothing; bad certificate settings are refused naming the field before anything starts."""
from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request

import pytest
import trio

from actors.settings import ConfigError, Settings
from gateway.client import connect
from tests.email_server import make_certificate
from tests.gateway_cluster import Peakdesk

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory, tls):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("tlsdata"), "pd-test-tls", "tls:",
                 tls_cert_file=tls.cert_path, tls_key_file=tls.key_path)
    yield p
    p.stop()


def test_the_gateway_speaks_https_and_wss_only(pd, tls):
    assert pd.url.startswith("wss://")
    me = pd.request("GET", "/api/v1/agents/me", None, pd.owner_token)         # over https
    assert me["role"] == "owner"
    with urllib.request.urlopen(f"{pd.http_url}/console", context=pd.ssl, timeout=10) as page:
        assert page.status == 200 and b"peakdesk" in page.read()

    async def chat():
        async with connect(pd.url, pd.visitor_token(), ssl_context=pd.ssl) as c:
            session = await c.open()
            await c.send_message(session, "text", {"text": "加密连接 over TLS"})
            return session
    assert trio.run(chat)

    with socket.create_connection(("127.0.0.1", pd.port), timeout=5) as raw:    # plain http: no answer
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        try:
            answer = raw.recv(100)
        except (ConnectionResetError, socket.timeout):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    untrusting = ssl.create_default_context()                                 # a client that doesn't trust it
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{pd.http_url}/healthz", context=untrusting, timeout=10)


def test_bad_tls_settings_are_refused_naming_the_field(tmp_path, tls):
    with pytest.raises(ConfigError, match="together"):
        Settings(data_dir=tmp_path, tls_cert_file=tls.cert_path)
    with pytest.raises(ConfigError, match="tls_key_file: no such file"):
        Settings(data_dir=tmp_path, tls_cert_file=tls.cert_path, tls_key_file=str(tmp_path / "nope.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a usable PEM"):
        Settings(data_dir=tmp_path, tls_cert_file=str(garbage), tls_key_file=tls.key_path)
    other = make_certificate(tmp_path)
    with pytest.raises(ConfigError, match="not a usable PEM"):
        Settings(data_dir=tmp_path, tls_cert_file=tls.cert_path, tls_key_file=other.key_path)   # key of another cert
