"""The web pages in real headless Chromium (Debian's, driven by Playwright): a customer in the
widget and agents in the console hold a whole conversation — text, image, quick reply,
transfer, close, CSAT — while the supervisor view shows it live; HTML/JS in a message is shown
as text on both sides. Screenshots go to test-artifacts/screenshots/ (docs/web.md)."""
from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from tests.gateway_cluster import Peakdesk

CHROMIUM = "/usr/bin/chromium"  # Debian's package `chromium` (.ci/run installs it)
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
XSS = 'hi <img src=x onerror="window.pwned=1"><script>window.pwned=2</script> 在吗'

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("web"), "pd-test-web", "web:")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def agent(pd: Peakdesk, name: str, role: str = "agent") -> tuple[str, str]:
    username = f"{name}{uuid.uuid4().hex[:6]}"
    record = pd.post("/api/v1/agents", {"username": username, "name": name, "password": "correct-horse-9",
                                        "role": role, "groups": ["default"], "max_concurrent": 5}, pd.owner_token)
    return record["agent_id"], username


def console_login(browser, pd: Peakdesk, username: str):
    page = browser.new_context(locale="zh-CN").new_page()
    page.goto(f"http://127.0.0.1:{pd.port}/console")
    page.fill("#username", username)
    page.fill("#password", "correct-horse-9")
    page.click("#login")
    page.wait_for_selector("#status")
    page.select_option("#status", "online")
    return page


def test_a_whole_conversation_in_the_widget_and_the_console_with_the_supervisor_watching(pd, browser, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    pd.post("/api/v1/quick-replies", {"shortcut": "/ship", "text": "您的订单已发货 it has shipped", "shared": True},
            pd.owner_token)
    a1_id, a1 = agent(pd, "xiaomei")
    a2_id, a2 = agent(pd, "ali")
    customer = browser.new_context(locale="zh-CN").new_page()
    dialogs = []
    customer.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    customer.goto(f"http://127.0.0.1:{pd.port}/widget-demo?merchant=demo")
    customer.click("#pd-open")
    customer.fill("#pd-input", XSS)
    customer.press("#pd-input", "Enter")

    console = console_login(browser, pd, a1)
    console.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    console.wait_for_selector(".conv[data-session]")
    shown = console.locator("#messages .msg", has_text="onerror")
    shown.wait_for()
    assert shown.inner_text().startswith("hi <img src=x onerror=")       # the markup, as text
    assert console.locator("#messages img").count() == 0
    assert customer.evaluate("window.pwned") is None and console.evaluate("window.pwned") is None

    console.fill("#composer", "/ship")                                    # quick reply by shortcut
    console.wait_for_selector("#quick div")
    console.press("#composer", "Enter")
    assert console.input_value("#composer") == "您的订单已发货 it has shipped"
    console.press("#composer", "Enter")
    customer.wait_for_selector("text=您的订单已发货 it has shipped")
    console.fill("#composer", '<b onmouseover="window.pwned=3">bold?</b>')   # and the other way round
    console.press("#composer", "Enter")
    customer.locator(".m", has_text='<b onmouseover="window.pwned=3">bold?</b>').wait_for()
    assert customer.locator(".msgs b").count() == 0

    image = tmp_path / "小票.png"
    image.write_bytes(PNG)
    customer.set_input_files("#pd-file", str(image))                      # an image, uploaded
    console.wait_for_selector("#messages img.pd-image[src^='blob:']")

    supervisor = browser.new_context().new_page()
    supervisor.goto(f"http://127.0.0.1:{pd.port}/supervisor")
    creds = dict(line.split(": ", 1) for line in (pd.settings.data_dir / "demo-login.txt").read_text().splitlines())
    supervisor.fill("#username", creds["username"])
    supervisor.fill("#password", creds["password"])
    supervisor.click("#login")
    supervisor.wait_for_selector(f"tr[data-agent='{a1_id}'] .badge.online")
    supervisor.wait_for_selector(f"tr[data-agent='{a1_id}'] td:has-text('1 / 5')")   # live: one conversation

    console2 = console_login(browser, pd, a2)                             # transfer to a colleague
    supervisor.wait_for_selector(f"tr[data-agent='{a2_id}'] .badge.online")
    console.select_option("#transfer-to", f"a:{a2_id}")
    console.click("#transfer")
    console2.wait_for_selector(".conv[data-session]")
    console2.locator("#messages .msg", has_text="it has shipped").wait_for()
    console2.fill("#composer", "我来跟进 — I'll take it from here")
    console2.press("#composer", "Enter")
    customer.wait_for_selector("text=我来跟进 — I'll take it from here")
    supervisor.wait_for_selector(f"tr[data-agent='{a2_id}'] td:has-text('1 / 5')")

    console2.screenshot(path=str(SHOTS / "console.png"))
    supervisor.screenshot(path=str(SHOTS / "supervisor.png"))
    console2.click("#close")                                              # close, then CSAT
    customer.wait_for_selector("#pd-csat")
    customer.screenshot(path=str(SHOTS / "widget.png"))
    customer.click("#pd-csat button[data-score='5']")
    customer.wait_for_selector("text=感谢您的评价！")
    assert dialogs == []
    assert all((SHOTS / f).stat().st_size > 1000 for f in ("console.png", "supervisor.png", "widget.png"))
    for page in (console, console2):  # off shift: the next test's conversations are not theirs
        page.select_option("#status", "offline")
        supervisor.wait_for_selector(f"tr[data-agent='{a1_id if page is console else a2_id}'] .badge.offline")
        page.context.close()
    customer.context.close()
    supervisor.context.close()


def test_the_widget_survives_a_reload_without_losing_or_repeating_messages(pd, browser):
    _, username = agent(pd, "reload")
    customer = browser.new_context().new_page()
    customer.goto(f"http://127.0.0.1:{pd.port}/widget-demo?merchant=demo")
    customer.click("#pd-open")
    for text in ("第一条 one", "第二条 two"):
        customer.fill("#pd-input", text)
        customer.press("#pd-input", "Enter")
    console = console_login(browser, pd, username)
    console.locator("#messages .msg", has_text="第二条 two").wait_for()
    customer.reload()
    customer.click("#pd-open")
    console.fill("#composer", "第三条 three")
    console.press("#composer", "Enter")
    customer.wait_for_selector("text=第三条 three")
    texts = customer.locator(".m:not(.sys)").all_inner_texts()
    assert texts == ["第一条 one", "第二条 two", "第三条 three"]


def test_the_pages_and_their_apis_answer_as_documented(pd):
    import json
    import urllib.error
    import urllib.request

    def get(path, token=None):
        req = urllib.request.Request(f"http://127.0.0.1:{pd.port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    assert get("/console")[0] == get("/supervisor")[0] == 200
    status, ctype, body = get("/widget.js")
    assert status == 200 and "javascript" in ctype and b"attachShadow" in body
    assert get("/web/../actors/host.py")[0] == 404 and get("/web/secret.key")[0] == 404
    status, _, body = get("/api/v1/widget/demo")
    assert status == 200 and set(json.loads(body)) == {"merchant", "name", "theme", "welcome_message", "bot"}
    assert get("/api/v1/widget/no-such-shop")[0] == 404
    assert get("/widget-demo?merchant=<script>")[0] == 422
    assert get("/api/v1/live")[0] == 401
    _, username = agent(pd, "plain")
    token = pd.post("/api/v1/auth/login", {"merchant": "demo", "username": username, "password": "correct-horse-9"})["token"]
    assert get("/api/v1/live", token)[0] == 403                       # agents don't see everyone
    status, _, body = get("/api/v1/live", pd.owner_token)
    live = json.loads(body)
    assert status == 200 and {q["group_id"] for q in live["queues"]} >= {"default"}
    assert all(a["status"] in ("online", "busy", "away", "offline") for a in live["agents"])
    assert all(isinstance(a["sessions"], list) for a in live["agents"])
    status, _, body = get("/api/v1/queues/default", pd.owner_token)
    assert status == 200 and isinstance(json.loads(body)["items"], list)
    assert get("/api/v1/queues/no-such-group", pd.owner_token)[0] == 404
    assert get("/api/v1/customers/v_nobody/conversations", token)[0] == 200       # agents read customers
    status, _, body = get("/api/v1/customers/v_nobody/conversations", pd.owner_token)
    assert status == 200 and json.loads(body) == {"items": []}
    assert get("/api/v1/customers/" + "x" * 200 + "/conversations", pd.owner_token)[0] == 422


def test_an_agent_picks_from_the_queue_sends_a_file_and_a_supervisor_takes_over(pd, browser, tmp_path):
    group = f"manual{uuid.uuid4().hex[:6]}"
    pd.post("/api/v1/groups", {"group_id": group, "name": "手动 Manual", "routing": {"strategy": "manual"}},
            pd.owner_token)
    username = f"picker{uuid.uuid4().hex[:6]}"
    pd.post("/api/v1/agents", {"username": username, "name": "Picker 小李", "password": "correct-horse-9",
                               "groups": [group], "max_concurrent": 3}, pd.owner_token)
    customer = browser.new_context().new_page()
    customer.goto(f"http://127.0.0.1:{pd.port}/widget-demo?merchant=demo&group={group}")
    customer.click("#pd-open")
    customer.fill("#pd-input", "有人吗 anyone?")
    customer.press("#pd-input", "Enter")
    customer.wait_for_selector("text=/排队中|In queue/")
    console = console_login(browser, pd, username)
    waiting = console.locator("[data-queued]")                           # the group's queue, live
    waiting.first.wait_for()
    waiting.first.click()                                                 # manual pick
    console.locator("#messages .msg", has_text="有人吗 anyone?").wait_for()
    pdf = tmp_path / "发票 invoice.pdf"
    pdf.write_bytes(b"%PDF-1.4 a tiny invoice")
    console.set_input_files("#attach", str(pdf))                          # an agent's attachment
    customer.wait_for_selector("text=发票 invoice.pdf")

    creds = dict(line.split(": ", 1) for line in (pd.settings.data_dir / "demo-login.txt").read_text().splitlines())
    boss = browser.new_context().new_page()
    boss.goto(f"http://127.0.0.1:{pd.port}/console")
    boss.fill("#username", creds["username"])
    boss.fill("#password", creds["password"])
    boss.click("#login")
    session = console.get_attribute(".conv[data-session]", "data-session")
    watched = boss.locator(f"[data-watch='{session}']")                  # all conversations, for leads
    watched.wait_for()
    watched.click()
    boss.locator("#messages .msg", has_text="有人吗 anyone?").wait_for()  # watching live
    boss.click("#takeover")
    console.wait_for_selector("text=/已转接|Transferred/")                  # the agent is told it left
    boss.fill("#composer", "我是主管 — the supervisor here")
    boss.press("#composer", "Enter")
    customer.wait_for_selector("text=我是主管 — the supervisor here")
    for page in (console, boss):
        page.select_option("#status", "offline")
        page.context.close()
    customer.context.close()


def test_agents_chat_with_each_other_in_the_console(pd, browser):
    a_id, a = agent(pd, "lin")
    b_id, b = agent(pd, "wang")
    first, second = console_login(browser, pd, a), console_login(browser, pd, b)
    for page in (first, second):
        page.wait_for_selector(f"#team-to option[value='a:{b_id if page is first else a_id}']", state="attached")
    first.select_option("#team-to", f"a:{b_id}")
    first.fill("#team-input", "帮我看下 TB123 <i>退款</i>?")
    first.press("#team-input", "Enter")
    got = second.locator("#team .msg", has_text="帮我看下 TB123 <i>退款</i>?")   # as text, with its sender
    got.wait_for()
    assert got.inner_text().startswith("lin")
    second.select_option("#team-to", "g:default")                     # the whole group
    second.fill("#team-input", "双11 全员在线 all hands")
    second.press("#team-input", "Enter")
    first.locator("#team .msg", has_text="双11 全员在线 all hands").wait_for()
    for page in (first, second):
        page.select_option("#status", "offline")
        page.context.close()
