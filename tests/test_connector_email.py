"""The email connector against real mail servers on 127.0.0.1 (tests/email_server.py: pymap for
IMAP, aiosmtpd for SMTP), real Redis for its cursor and the real local attachment store."""
from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.asyncio import Redis

from connectors.base import Outbound, Refused, SendFailed, WebhookRequest
from connectors.email import EmailConfig, EmailConnector, MailboxError
from connectors.email.ids import Own
from connectors.email.parse import Bounce, Mail, parse_mail
from connectors.support import ChannelState, MerchantMedia
from storage.attachments import LocalAttachmentStore
from tests.email_server import ImapServer, SilentServer, SmtpServer, free_port, make_certificate

# aiosmtpd warns about AUTH without STARTTLS even on an implicit-TLS ("ssl") listener
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SHOP = "shop@example.com"
USER, PASSWORD = "shop@example.com", "imap-secret"
CUSTOMER = "zhangsan@example.cn"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + "退款单".encode() + b"\n%%EOF\n"
SMTP_CODES = {"busy@example.cn": "451 4.7.1 Greylisted, try again later",
              "full@example.cn": "452 4.2.2 Mailbox full",
              "nobody@example.cn": "550 5.1.1 No such user here",
              "banned@example.cn": "553 5.7.1 Relaying denied"}


class Clock:
    """The connector opens the mailbox once per poll_interval_s: tests move time instead of waiting."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def imap():
    with ImapServer(USER, PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def smtp():
    with SmtpServer(codes=SMTP_CODES) as server:
        yield server


@pytest.fixture
def store(tmp_path):
    return LocalAttachmentStore(tmp_path / "attachments")


@pytest.fixture
def media(store):
    return MerchantMedia(store, "m1")


def settings(imap_port: int, smtp_port: int, **overrides) -> EmailConfig:
    values = dict(imap_host="127.0.0.1", imap_port=imap_port, imap_tls="none", imap_username=USER,
                  imap_password=PASSWORD, mailbox=f"T{uuid.uuid4().hex[:10]}", smtp_host="127.0.0.1",
                  smtp_port=smtp_port, smtp_tls="none", from_address=SHOP, from_name="小店客服",
                  poll_interval_s=30, timeout_s=5)
    return EmailConfig(**{**values, **overrides})


def connector(imap, smtp, media=None, state=None, **overrides) -> EmailConnector:
    conn = EmailConnector(settings(imap.port, smtp.port if smtp else free_port(), **overrides), None,
                          media, state, clock=Clock())
    imap.append(b"From: setup@example.org\r\nMessage-ID: <setup@x>\r\n\r\nbefore the channel\r\n",
                conn.config.mailbox)                                  # the mailbox exists, with old mail
    return conn


async def poll(conn: EmailConnector, cursor: str):
    conn.clock.now += conn.config.poll_interval_s
    return await conn.poll(cursor)


def word(text: str, charset: str = "utf-8") -> str:
    """An RFC 2047 encoded word, written here rather than with the email package."""
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def mail(body: bytes | str = "你好", *, charset: str = "utf-8", sender: str | None = None,
         subject: str = "咨询", message_id: str | None = None, extra: tuple[str, ...] = (),
         content_type: str | None = None) -> bytes:
    head = [f"From: {sender or word('张三') + ' <ZhangSan@Example.CN>'}", f"To: {SHOP}",
            f"Subject: {word(subject)}", f"Message-ID: {message_id or new_id()}",
            "Date: Tue, 03 Nov 2026 10:00:00 +0800", "MIME-Version: 1.0", *extra,
            f"Content-Type: {content_type or f'text/plain; charset={charset}'}", "Content-Transfer-Encoding: 8bit"]
    data = body if isinstance(body, bytes) else body.encode(charset)
    return "\r\n".join(h for h in head if h).encode() + b"\r\n\r\n" + data


def new_id() -> str:
    return f"<{uuid.uuid4().hex}@example.cn>"


def composed(text: str, *, subject: str, message_id: str, in_reply_to: str = "", references: str = "",
             files: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    """A customer's mail client's mail (multipart when it has attachments)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = f"张三 <{CUSTOMER}>", SHOP, subject, message_id
    if in_reply_to:
        msg["In-Reply-To"], msg["References"] = in_reply_to, references
    msg.set_content(text)
    for name, mime, data in files:
        msg.add_attachment(data, maintype=mime.split("/")[0], subtype=mime.split("/")[1], filename=name)
    return msg.as_bytes()


# -- settings and the webhook ---------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field", [
    ({"imap_host": "imap.example.com"}, "imap_tls"),              # tls none to a remote server
    ({"smtp_host": "smtp.example.com"}, "smtp_tls"),
    ({"from_address": "not an address"}, "from_address"),
    ({"imap_password": "密码"}, "imap_password"),
    ({"mailbox": 'IN"BOX'}, "mailbox"),
    ({"smtp_username": "u"}, "smtp_password"),
    ({"ca_pem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}, "ca_pem"),
    ({"api_key": "x"}, "api_key"),
    ({"poll_interval_s": 1}, "poll_interval_s"),
])
def test_a_bad_setting_is_refused_naming_the_field(overrides, field):
    with pytest.raises(ValidationError) as info:
        settings(993, 465, **overrides)
    assert field in str(info.value)


def test_ports_follow_the_tls_mode_and_secrets_stay_out_of_repr():
    config = EmailConfig(imap_host="imap.qq.com", imap_username=USER, imap_password=PASSWORD,
                         smtp_host="smtp.qq.com", smtp_tls="starttls", smtp_username=USER, smtp_password="pw-smtp",
                         from_address="Service@Shop.Example")
    assert (config.imap_port, config.smtp_port, config.from_address) == (993, 587, "service@shop.example")
    assert PASSWORD not in repr(config) and "pw-smtp" not in repr(config)


def test_the_webhook_is_refused():
    conn = EmailConnector(settings(993, 465), None)
    with pytest.raises(Refused) as info:
        asyncio.run(conn.webhook(WebhookRequest("POST", "/hooks/m1/c1", {}, {}, b"{}")))
    assert info.value.status == 404 and "IMAP" in info.value.reason


# -- a thread, in and out -------------------------------------------------------------------------------
def test_a_thread_in_and_out_with_attachments_both_ways(imap, smtp, media, redis_url, prefix):
    async def main():
        redis = Redis.from_url(redis_url)
        state = ChannelState(redis, prefix, "m1", "c1")
        conn = connector(imap, smtp, media, state)
        box = conn.config.mailbox

        async def poll_saving():
            got, cursor = await poll(conn, await state.get("poll_cursor") or "")
            await state.set("poll_cursor", cursor)                  # as the gateway does
            return got

        assert await poll_saving() == []                            # the mail already there is old
        # 1. the customer writes: GBK body, GBK encoded subject, a photo with a Chinese name
        m1 = new_id()
        first = EmailMessage()
        first["From"], first["To"], first["Message-ID"] = f"{word('张三', 'gbk')} <ZhangSan@Example.CN>", SHOP, m1
        first["Subject"] = word("订单 12345 退款", "gbk")
        first.set_content("你好，我买的电饭煲坏了，要退款。".encode("gbk"), "text", "plain", cte="base64")
        first.set_param("charset", "gbk")
        first.add_attachment(PNG, maintype="image", subtype="png", filename="坏了的照片.png")
        imap.append(first.as_bytes(), box)
        text, photo = await poll_saving()
        assert (text.kind, text.content) == ("text", {"text": "主题 Subject: 订单 12345 退款\n\n你好，我买的电饭煲坏了，要退款。"})
        assert (text.external_id, text.name, text.message_id, text.thread) == (CUSTOMER, "张三", m1, m1)
        assert text.reply_to == {"message_id": m1, "references": [], "subject": "订单 12345 退款"}
        assert photo.kind == "image" and photo.message_id == f"{m1}#1" and photo.thread == m1
        assert (photo.content["name"], photo.content["mime"], photo.content["size"]) == ("坏了的照片.png", "image/png", len(PNG))
        assert (await media.read(photo.content["attachment_id"]))[1] == PNG

        # 2. the agent answers, then sends a PDF; a retry of the answer keeps its Message-ID
        answer = Outbound(CUSTOMER, "text", {"text": "您好，已为您办理退款，请查收退款单。"}, key="m1/s1/3",
                          thread=m1, reply_to=text.reply_to)
        r1 = await conn.send(answer)
        stored = await media.store("退款单.pdf", "application/pdf", PDF)
        r_pdf = await conn.send(Outbound(CUSTOMER, "file", stored, key="m1/s1/4", thread=m1, reply_to=text.reply_to))
        assert await conn.send(answer) == r1 and r1 != r_pdf
        got, pdf_mail, again = smtp.received[-3:]
        assert (got.mail_from, got.rcpt_tos) == (SHOP, [CUSTOMER])
        msg = got.message
        assert (msg["From"].addresses[0].display_name, msg["From"].addresses[0].addr_spec) == ("小店客服", SHOP)
        assert (str(msg["To"]), str(msg["Subject"]), msg["Message-ID"]) == (CUSTOMER, "Re: 订单 12345 退款", r1)
        assert (msg["In-Reply-To"], msg["References"]) == (m1, m1)
        assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
        assert msg.get_content().strip() == "您好，已为您办理退款，请查收退款单。"
        assert again.message["Message-ID"] == r1
        part = next(pdf_mail.message.iter_attachments())
        assert (part.get_filename(), part.get_content_type(), part.get_content()) == ("退款单.pdf", "application/pdf", PDF)
        assert (pdf_mail.message["Subject"], pdf_mail.message["In-Reply-To"]) == ("Re: 订单 12345 退款", m1)

        # 3. the customer answers that: same thread, only the new words
        m2 = new_id()
        imap.append(composed("好的，谢谢！\n\n2026年11月3日 周二 10:05, 小店客服 <shop@example.com> wrote:\n"
                             "> 您好，已为您办理退款，请查收退款单。\n", subject="Re: 订单 12345 退款",
                             message_id=m2, in_reply_to=r1, references=f"{m1} {r1}"), box)
        reply, = await poll_saving()
        assert (reply.content, reply.thread, reply.message_id) == ({"text": "好的，谢谢！"}, m1, m2)
        assert reply.reply_to == {"message_id": m2, "references": [m1, r1], "subject": "Re: 订单 12345 退款"}
        await conn.send(Outbound(CUSTOMER, "text", {"text": "不客气 😊"}, key="m1/s1/6", thread=m1, reply_to=reply.reply_to))
        msg = smtp.received[-1].message
        assert (msg["Subject"], msg["In-Reply-To"], msg["References"]) == ("Re: 订单 12345 退款", m2, f"{m1} {r1} {m2}")

        # 4. a new subject is a new thread
        m3 = new_id()
        imap.append(composed("请问怎么开发票？", subject="发票", message_id=m3), box)
        invoice, = await poll_saving()
        assert (invoice.thread, invoice.content["text"]) == (m3, "主题 Subject: 发票\n\n请问怎么开发票？")

        # 5. after a restart, the saved cursor delivers nothing twice
        restarted = EmailConnector(conn.config, None, media, state, clock=Clock())
        assert await restarted.poll(await state.get("poll_cursor")) == ([], await state.get("poll_cursor"))
        await redis.aclose()
    asyncio.run(main())


# -- the cursor -----------------------------------------------------------------------------------------
def test_the_first_poll_starts_from_the_newest_mail(imap, smtp):
    async def main():
        conn = connector(imap, smtp)
        last = imap.append(mail("旧邮件"), conn.config.mailbox)
        got, cursor = await poll(conn, "")
        assert got == [] and cursor.endswith(f":{last}")
        imap.append(mail("新邮件"), conn.config.mailbox)
        got, _ = await poll(conn, cursor)
        assert [m.content["text"] for m in got] == ["主题 Subject: 咨询\n\n新邮件"]
    asyncio.run(main())


def test_a_changed_uidvalidity_starts_over_from_the_newest(imap, smtp, caplog):
    async def main():
        conn = connector(imap, smtp)
        _, cursor = await poll(conn, "")
        imap.recreate(conn.config.mailbox)                        # renumbered: new UIDVALIDITY
        imap.append(mail("重建后的第一封"), conn.config.mailbox)
        got, new_cursor = await poll(conn, cursor)
        assert got == [] and new_cursor.split(":")[0] != cursor.split(":")[0]
        assert "UIDVALIDITY" in caplog.text
        imap.append(mail("之后的"), conn.config.mailbox)
        got, _ = await poll(conn, new_cursor)
        assert [m.content["text"].split("\n")[-1] for m in got] == ["之后的"]
    asyncio.run(main())


def test_the_mailbox_is_opened_once_per_interval_and_a_poll_takes_a_batch(imap, smtp):
    async def main():
        conn = connector(imap, smtp, batch=2)
        _, cursor = await poll(conn, "")
        for n in range(3):
            imap.append(mail(f"第{n}封"), conn.config.mailbox)
        assert await conn.poll(cursor) == ([], cursor)           # called again at once: not opened
        first, cursor = await poll(conn, cursor)
        second, cursor = await poll(conn, cursor)
        assert [len(first), len(second)] == [2, 1]
        assert await poll(conn, "garbage") == ([], cursor)      # an unreadable cursor: from the newest
    asyncio.run(main())


# -- what the agent reads -------------------------------------------------------------------------------
OWN = Own(SHOP)


def read(raw: bytes) -> Mail:
    parsed = parse_mail(raw, OWN, 1 << 20)
    assert isinstance(parsed, Mail)
    return parsed


@pytest.mark.parametrize("raw, text", [
    (mail("你好，GBK 正文", charset="gbk"), "你好，GBK 正文"),
    (mail("GB18030 的字：𠀀 €", charset="gb18030"), "GB18030 的字：𠀀 €"),
    (mail("镕 is GBK, not GB2312".encode("gbk"), charset="gb2312"), "镕 is GBK, not GB2312"),
    (mail("您好，繁體中文", charset="big5"), "您好，繁體中文"),
    (mail("標籤錯了但是 UTF-8".encode(), charset="x-unknown-charset"), "標籤錯了但是 UTF-8"),
    (mail("没有标签的 GBK".encode("gbk"), content_type="text/plain"), "没有标签的 GBK"),
    (mail("标着 UTF-8 其实是 GBK".encode("gbk"), charset="utf-8"), "标着 UTF-8 其实是 GBK"),
])
def test_chinese_bodies_are_decoded(raw, text):
    assert read(raw).text == text


@pytest.mark.parametrize("subject_line, subject", [
    ("Subject: " + word("退货申请", "gb2312"), "退货申请"),
    ("Subject: " + word("退貨申請", "big5") + " " + word("（急）"), "退貨申請（急）"),
    ("Subject: =?utf-8?Q?=E9=80=80=E6=AC=BE?= please", "退款 please"),
])
def test_encoded_subjects_are_decoded(subject_line, subject):
    raw = mail().replace(b"Subject: " + word("咨询").encode(), subject_line.encode())
    assert read(raw).subject == subject


@pytest.mark.parametrize("charset", ["gbk", "utf-8"])
def test_raw_eight_bit_subjects_are_decoded(charset):
    raw = mail().replace(b"Subject: " + word("咨询").encode(), "Subject: 发票抬头".encode(charset))
    assert read(raw).subject == "发票抬头"


def test_html_only_mail_becomes_text_without_scripts_or_the_quote():
    html = ("<html><head><style>p{color:red}</style><title>t</title></head><body>"
            "<p>你好 &amp; hello</p><div>第二行<br>第三行</div><script>alert(1)</script>"
            '<div class="gmail_quote">On Mon wrote:<blockquote>旧的</blockquote></div></body></html>')
    assert read(mail(html, content_type="text/html; charset=utf-8")).text == "你好 & hello\n第二行\n第三行"


@pytest.mark.parametrize("history", [
    "On Tue, Nov 3, 2026 at 10:05 AM 小店客服 <shop@example.com> wrote:\n> 旧的回复\n> 更旧的",
    "On Tue, Nov 3, 2026 at 10:05 AM 小店客服 <shop@example.com>\nwrote:\n> 旧的回复",
    "-----原始邮件-----\n发件人: 小店客服 <shop@example.com>\n发送时间: 2026年11月3日 10:05\n旧的回复",
    "------------------ 原始邮件 ------------------\n发件人: \"小店客服\"<shop@example.com>;\n旧的回复",
    "在 2026年11月3日，10:05，小店客服 <shop@example.com> 写道：\n旧的回复",
    "-----Original Message-----\nFrom: shop@example.com\n旧的回复",
    "________________________________\nFrom: 小店客服\nSent: Tuesday\n旧的回复",
    "From: 小店客服 <shop@example.com>\nSent: Tuesday, November 3, 2026\nTo: 张三\n旧的回复",
    "> 旧的回复\n> 更旧的",
    "-- \n张三\n电话 138xxxx",
])
def test_quoted_history_is_trimmed(history):
    assert read(mail(f"收到，谢谢！\n\n{history}\n")).text == "收到，谢谢！"


def test_a_mail_that_is_only_quote_keeps_its_words():
    assert read(mail("> 只有引用\n")).text == "> 只有引用"


def test_an_attachment_the_store_refuses_is_named_in_the_text(imap, smtp, media, store):
    async def main():
        conn = connector(imap, smtp, media)
        _, cursor = await poll(conn, "")
        m = new_id()
        imap.append(composed("附件见下", subject="附件", message_id=m,
                             files=(("病毒.exe", "application/x-msdownload", b"MZ\x90\x00"), ("图.png", "image/png", PNG))),
                    conn.config.mailbox)
        (text, image), _ = await poll(conn, cursor)
        assert text.content["text"].startswith("主题 Subject: 附件\n\n附件见下\n\n[附件未收下 Attachment not kept: 病毒.exe")
        assert image.kind == "image" and image.message_id == f"{m}#2"
        assert len([p for p in (store.root / "m1").iterdir() if p.suffix == ".json"]) == 1
    asyncio.run(main())


# -- malformed, hostile and automatic mail --------------------------------------------------------------
def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    for n in range(depth):
        b = b"b%d" % n
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + body + b"\r\n--" + b + b"--\r\n"
    return b"From: a@example.cn\r\nMessage-ID: <deep@example.cn>\r\n" + body


def many_parts(n: int, attachment: bool = False) -> bytes:
    part = (b"--b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=a.png\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PNG) + b"\r\n") if attachment \
        else b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return mail(part * n + b"--b--\r\n", content_type="multipart/mixed; boundary=b")


def dsn(original_id: str, action: str = "failed") -> bytes:
    return ("From: Mail Delivery System <MAILER-DAEMON@mx.example.cn>\r\nTo: shop@example.com\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce-" + uuid.uuid4().hex + "@mx.example.cn>\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
            "--R\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            "--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.cn\r\n\r\n"
            f"Final-Recipient: rfc822; nobody@example.cn\r\nAction: {action}\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.cn>: Recipient address rejected\r\n\r\n"
            "--R\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: shop@example.com\r\nTo: nobody@example.cn\r\nMessage-ID: {original_id}\r\n\r\n--R--\r\n").encode()


OURS = OWN.message_id("m1/s1/9")
HOSTILE = {
    "no From": (mail().replace(b"From: ", b"X-Was-From: "), "from: missing"),
    "From with no address": (mail(sender="zhangsan"), "is not an email address"),
    "two From addresses": (mail(sender="a@example.cn, b@example.cn"), "2 addresses"),
    "two From headers": (mail(extra=("From: b@example.cn",)), "from: appears 2 times"),
    "no Message-ID": (mail().replace(b"Message-ID: ", b"X-Message-ID: "), "message-id: missing"),
    "two Message-IDs": (mail(extra=("Message-ID: <2@example.cn>",)), "message-id: appears 2 times"),
    "a Message-ID that is not one": (mail(message_id="just some words"), "is not <id@host>"),
    "CRLF injected into the Subject": (mail().replace(b"Subject: " + word("咨询").encode(),
                                                      b"Subject: =?utf-8?Q?hi=0D=0ABcc=3A_x=40evil.example?="),
                                       "subject: a line break"),
    "CRLF injected into the From name": (mail(sender="=?utf-8?Q?Zh=0D=0ABcc=3A_x=40evil?= <a@example.cn>"),
                                         "header injection"),
    "NUL in the Subject": (mail().replace(b"Subject: " + word("咨询").encode(), b"Subject: =?utf-8?Q?a=00b?="),
                           "subject: control characters"),
    "a 5000-character Subject": (mail(subject="长" * 5000), "over 2000"),
    "raw Subject bytes of no charset": (mail().replace(b"Subject: " + word("咨询").encode(), b"Subject: \xff\xfe\xfd"),
                                        "raw 8-bit bytes in no known charset"),
    "a multipart without a boundary": (mail(b"--x\r\n\r\nhi\r\n--x--\r\n", content_type="multipart/mixed"),
                                       "without a boundary"),
    "a boundary that never appears": (mail(b"--x\r\n\r\nhi\r\n--x--\r\n", content_type="multipart/mixed; boundary=zzz"),
                                      "never appears"),
    "multiparts nested 40 deep": (nested(40), "nested deeper than"),
    "multiparts nested 3000 deep": (nested(3000), "RecursionError"),
    "150 parts": (many_parts(150), "more than 100 parts"),
    "21 attachments": (many_parts(21, attachment=True), "21 in one mail"),
    "broken base64 text": (mail(b"!!!@@@###\r\n", extra=("Content-Transfer-Encoding: base64",)).replace(
        b"Content-Transfer-Encoding: 8bit\r\n", b""), "broken base64"),
    "GBK that isn't": (mail(b"\xff\xfe\xfd\x80 abc", charset="gbk"), "not decodable as gbk"),
    "Big5 that isn't": (mail(b"\xa4\xff\xff\xff", charset="big5"), "not decodable as big5"),
    "a bad charset name and bytes of none": (mail(b"\xff\xfe\xfd\x80", charset="x-klingon"), "not decodable"),
    "an empty mail": (mail("", subject="", extra=("In-Reply-To: <earlier@example.cn>",)), "empty"),
    "Auto-Submitted": (mail("我正在休假", extra=("Auto-Submitted: auto-replied",)), "Auto-Submitted: auto-replied"),
    "X-Autoreply": (mail("自动回复", extra=("X-Autoreply: yes",)), "x-autoreply"),
    "Precedence: bulk": (mail("促销", extra=("Precedence: bulk",)), "Precedence: bulk"),
    "a mailing list": (mail("newsletter", extra=("List-Id: <news.example.cn>",)), "mailing list"),
    "a null sender": (mail("notice", extra=("Return-Path: <>",)), "null sender"),
    "our own mail back": (mail("回环", sender=f"小店客服 <{SHOP.upper()}>"), "loop: mail from our own address"),
    "our Message-ID back": (mail("回环", message_id=OURS), "loop:"),
    "a bounce about someone else's mail": (dsn("<other@elsewhere.example>"), "about no mail we sent"),
    "a delay notice": (dsn(OURS, action="delayed"), "delay notice"),
    "binary garbage": (bytes(range(256)) * 8, "from: missing"),
    "over the size limit": (mail("大" * 400_000), "size:"),
}


@pytest.mark.parametrize("raw, reason", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_malformed_or_automatic_mail_is_refused_naming_why(raw, reason):
    with pytest.raises(Refused) as info:
        parse_mail(raw, OWN, 1 << 20)
    assert reason in info.value.reason


SEEDS = [raw for raw, _ in HOSTILE.values() if len(raw) < 20_000] + [
    mail("你好", charset="gbk"), dsn(OURS),
    composed("附件", subject="图", message_id="<a@example.cn>", files=(("图.png", "image/png", PNG),))]


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(
    st.integers(0, 5000), st.integers(0, 20),
    st.sampled_from([b"", b"\r\n", b"=?gbk?B?", b"?=", b"--", b";", b'"', b"<", b">", b"\x00", b"\xff",
                     b"Content-Type: multipart/mixed; boundary=", b"Content-Transfer-Encoding: base64\r\n"])),
    min_size=1, max_size=6))
def test_mangled_mail_is_read_or_refused_never_a_crash(seed, edits):
    raw = seed
    for at, cut, insert in edits:
        at %= len(raw) + 1
        raw = raw[:at] + insert + raw[at + cut:]
    try:
        assert isinstance(parse_mail(raw, OWN, 1 << 20), (Mail, Bounce))
    except Refused as exc:
        assert exc.reason


def test_hostile_mail_in_the_mailbox_delivers_and_stores_nothing(imap, smtp, media, store, caplog):
    async def main():
        conn = connector(imap, smtp, media, max_message_bytes=1 << 20, batch=60)
        _, cursor = await poll(conn, "")
        # all but the 3000-deep one, which pymap itself cannot store (RecursionError on APPEND)
        raws = [raw for name, (raw, _) in HOSTILE.items() if "3000" not in name]
        uids = imap.append_all(raws + [mail("巨" * 600_000, extra=("X-Huge: 1",))], conn.config.mailbox)
        with caplog.at_level(logging.WARNING, logger="connectors.email"):
            got, cursor = await poll(conn, cursor)
        assert got == [] and cursor.endswith(f":{uids[-1]}") and conn.take_receipts() == []
        assert not (store.root / "m1").exists()
        skipped = [r.getMessage() for r in caplog.records if "skipped mail UID" in r.getMessage()]
        assert len(skipped) == len(uids)
        assert any(f"UID {uids[-1]} " in line and "not downloaded" in line for line in skipped)
    asyncio.run(main())


# -- bounces ---------------------------------------------------------------------------------------------
def test_a_bounce_of_our_mail_is_a_failed_receipt(imap, smtp):
    async def main():
        conn = connector(imap, smtp)
        _, cursor = await poll(conn, "")
        sent = await conn.send(Outbound("nobody@example.org", "text", {"text": "您好"}, key="m1/s2/1"))
        imap.append(dsn(sent), conn.config.mailbox)
        got, _ = await poll(conn, cursor)
        receipt, = conn.take_receipts()
        assert got == [] and (receipt.message_id, receipt.status) == (sent, "failed")
        assert "550 5.1.1" in receipt.error and conn.take_receipts() == []
    asyncio.run(main())


def test_a_bounce_without_a_report_is_found_by_our_message_id():
    raw = (f"From: postmaster@mx.example.cn\r\nMessage-ID: <b1@mx.example.cn>\r\nSubject: failure notice\r\n\r\n"
           f"Sorry, I couldn't deliver.\r\n--- Below this line is a copy of the message.\r\nMessage-ID: {OURS}\r\n").encode()
    assert parse_mail(raw, OWN, 1 << 20) == Bounce(OURS, "failed", "undeliverable")


# -- sending: what the SMTP server says, and what never leaves -----------------------------------------
@pytest.mark.parametrize("recipient, retry", [("busy@example.cn", True), ("full@example.cn", True),
                                              ("nobody@example.cn", False), ("banned@example.cn", False)])
def test_smtp_replies_decide_whether_to_retry(imap, smtp, recipient, retry):
    conn = EmailConnector(settings(imap.port, smtp.port), None)
    with pytest.raises(SendFailed) as info:
        asyncio.run(conn.send(Outbound(recipient, "text", {"text": "您好"}, key="m1/s3/1")))
    assert info.value.retry is retry and SMTP_CODES[recipient].split()[0] in info.value.reason


def test_an_unreachable_or_hanging_smtp_server_is_retried(imap):
    with SilentServer() as silent:
        for port in (free_port(), silent.port):
            conn = EmailConnector(settings(imap.port, port, timeout_s=0.5), None)
            with pytest.raises(SendFailed) as info:
                asyncio.run(conn.send(Outbound(CUSTOMER, "text", {"text": "您好"}, key="m1/s3/2")))
            assert info.value.retry is True
        assert "timed out" in info.value.reason


@pytest.mark.parametrize("recipient", ["not-an-address", f"{CUSTOMER}\r\nBcc: victim@example.org", "", "a@b c.cn"])
def test_a_recipient_that_is_no_address_is_never_sent_to(imap, smtp, recipient):
    before = len(smtp.received)
    conn = EmailConnector(settings(imap.port, smtp.port), None)
    with pytest.raises(SendFailed) as info:
        asyncio.run(conn.send(Outbound(recipient, "text", {"text": "hi"}, key="m1/s3/3")))
    assert info.value.retry is False and "recipient" in info.value.reason and len(smtp.received) == before


@pytest.mark.parametrize("kind, content, reason", [
    ("file", {"attachment_id": "0" * 32, "name": "a.pdf", "mime": "application/pdf", "size": 1}, "not found"),
    ("sticker", {"id": "x"}, "cannot be sent by email"),
    ("text", {"text": "   "}, "empty"),
])
def test_what_email_cannot_carry_is_not_retried(imap, smtp, media, kind, content, reason):
    conn = EmailConnector(settings(imap.port, smtp.port), None, media)
    with pytest.raises(SendFailed) as info:
        asyncio.run(conn.send(Outbound(CUSTOMER, kind, content, key="m1/s3/4")))
    assert info.value.retry is False and reason in info.value.reason


def test_a_stored_reply_to_cannot_inject_headers(imap, smtp):
    conn = EmailConnector(settings(imap.port, smtp.port), None)
    reply_to = {"message_id": "<a@b>\r\nBcc: victim@example.org", "references": ["<r@x>", "bad\r\nX: y"],
                "subject": "退款\r\nBcc: victim@example.org"}
    asyncio.run(conn.send(Outbound(CUSTOMER, "rich", {"html": "<b>您好</b>"}, key="m1/s3/5", reply_to=reply_to)))
    got = smtp.received[-1]
    assert got.rcpt_tos == [CUSTOMER] and "Bcc" not in got.message and "In-Reply-To" not in got.message
    assert got.message["Subject"] == "Re: 退款 Bcc: victim@example.org" and got.message.get_content().strip() == "您好"


# -- TLS and credentials -------------------------------------------------------------------------------------
@pytest.mark.parametrize("tls", ["ssl", "starttls"])
def test_tls_and_logins_both_ways(cert, tls):
    async def main(imap, smtp):
        conn = EmailConnector(settings(imap.port, smtp.port, imap_tls=tls, smtp_tls=tls, imap_host="localhost",
                                       smtp_username="smtp-user", smtp_password="smtp-secret", ca_pem=cert.pem),
                              None, clock=Clock())
        imap.append(mail("旧"), conn.config.mailbox)
        _, cursor = await poll(conn, "")
        imap.append(mail("加密的信"), conn.config.mailbox)
        got, _ = await poll(conn, cursor)
        assert got[0].content["text"].endswith("加密的信")
        await conn.send(Outbound(CUSTOMER, "text", {"text": "收到"}, key="m1/s4/1", reply_to=got[0].reply_to))
        assert smtp.received[-1].authenticated_as == "smtp-user"
    with ImapServer(USER, PASSWORD, tls=tls, cert=cert) as imap, \
            SmtpServer(tls=tls, cert=cert, user="smtp-user", password="smtp-secret") as smtp:
        asyncio.run(main(imap, smtp))


def test_wrong_credentials_and_untrusted_certificates_are_not_retried(cert):
    with ImapServer(USER, PASSWORD, tls="ssl", cert=cert) as imap, \
            SmtpServer(tls="ssl", cert=cert, user="smtp-user", password="smtp-secret") as smtp:
        base = dict(imap_tls="ssl", smtp_tls="ssl", smtp_username="smtp-user", ca_pem=cert.pem)
        wrong = EmailConnector(settings(imap.port, smtp.port, **{**base, "imap_password": "wrong",
                                                                 "smtp_password": "wrong"}), None)
        with pytest.raises(MailboxError) as polled:
            asyncio.run(wrong.poll(""))
        with pytest.raises(SendFailed) as sent:
            asyncio.run(wrong.send(Outbound(CUSTOMER, "text", {"text": "hi"}, key="m1/s5/1")))
        assert (polled.value.retry, sent.value.retry) == (False, False)
        assert "imap_password" in polled.value.reason and "smtp_password" in sent.value.reason
        untrusted = EmailConnector(settings(imap.port, smtp.port, **{**base, "ca_pem": "", "smtp_password": "smtp-secret"}), None)
        with pytest.raises(SendFailed) as sent:
            asyncio.run(untrusted.send(Outbound(CUSTOMER, "text", {"text": "hi"}, key="m1/s5/2")))
        with pytest.raises(MailboxError) as polled:
            asyncio.run(untrusted.poll(""))
        assert (sent.value.retry, polled.value.retry) == (False, False) and "ca_pem" in sent.value.reason


def test_an_unreachable_imap_server_is_retried_and_a_missing_mailbox_is_not(imap):
    with pytest.raises(MailboxError) as info:
        asyncio.run(EmailConnector(settings(free_port(), free_port()), None).poll(""))
    assert info.value.retry is True
    with pytest.raises(MailboxError) as info:
        asyncio.run(EmailConnector(settings(imap.port, free_port(), mailbox="No such box"), None).poll(""))
    assert info.value.retry is False and "No such box" in info.value.reason
