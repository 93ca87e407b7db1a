"""The knowledge base over REST (Quart app, real Redis): import and export as JSON and CSV,
single entries, roles, tenancy, and bad input that names what is wrong and changes nothing."""
from __future__ import annotations

import json
from pathlib import Path


from actors.bot.kb import from_csv
from tests.api_client import Api, run

KB = json.loads((Path(__file__).parent / "data" / "bot" / "kb.json").read_text())
ENTRY = {"id": "gift-card", "question": "礼品卡怎么用？", "answer": "在结算页输入礼品卡卡号即可抵扣。",
         "alternatives": ["how do I use a gift card", "礼品卡能退吗"], "category": "payment",
         "cards": [{"type": "link", "title": "礼品卡说明 Gift cards", "url": "https://shop.example.com/giftcard"}]}


def test_import_export_roundtrip_in_json_and_csv(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            status, body = await api.call("POST", "/api/v1/kb/import?mode=replace", a.tokens["admin"], json=KB)
            assert (status, body) == (200, {"imported": len(KB), "total": len(KB), "replaced": True})
            status, listing = await api.call("GET", "/api/v1/kb", a.tokens["agent"])
            assert status == 200 and [e["id"] for e in listing["items"]] == sorted(e["id"] for e in KB)
            resp = await api.client.get("/api/v1/kb/export?format=csv", headers={"Authorization": f"Bearer {a.tokens['agent']}"})
            csv_bytes = await resp.get_data()
            assert resp.status_code == 200 and resp.mimetype == "text/csv"
            assert {e.id: e.to_dict() for e in from_csv(csv_bytes)} == {e["id"]: e for e in listing["items"]}
            # the CSV imports back (replace) to the very same knowledge base
            status, _ = await api.call("POST", "/api/v1/kb/import?mode=replace", a.tokens["admin"], data=csv_bytes,
                                       headers={"Content-Type": "text/csv"})
            assert status == 200
            _, again = await api.call("GET", "/api/v1/kb", a.tokens["agent"])
            assert again["items"] == listing["items"] and again["version"] > listing["version"]
            status, exported = await api.call("GET", "/api/v1/kb/export", a.tokens["agent"])
            assert exported == listing["items"]
    run(main())


def test_single_entries_are_saved_read_and_deleted_by_supervisors_and_api_keys(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            status, saved = await api.call("PUT", "/api/v1/kb/gift-card", a.tokens["supervisor"], json=ENTRY)
            assert status == 201 and saved["cards"][0]["url"] == "https://shop.example.com/giftcard"
            status, _ = await api.call("PUT", "/api/v1/kb/gift-card", a.tokens["api"], json={**ENTRY, "answer": "改了"})
            assert status == 200
            status, got = await api.call("GET", "/api/v1/kb/gift-card", a.tokens["agent"])
            assert status == 200 and got["answer"] == "改了"
            status, answer = await api.call("PUT", "/api/v1/kb/gift-card", a.tokens["agent"], json=ENTRY)
            assert status == 403 and answer["error"] == "forbidden"
            status, _ = await api.call("DELETE", "/api/v1/kb/gift-card", a.tokens["admin"])
            assert status == 204
            status, _ = await api.call("GET", "/api/v1/kb/gift-card", a.tokens["agent"])
            assert status == 404
            status, _ = await api.call("DELETE", "/api/v1/kb/gift-card", a.tokens["admin"])
            assert status == 404
    run(main())


BAD_JSON = [
    ({"id": "x"}, "JSON list"),
    ([ENTRY, ENTRY], "appears twice"),
    ([{**ENTRY, "question": ""}], "question"),
    ([{**ENTRY, "id": "has space"}], "id"),
    ([{**ENTRY, "answer": "a" * 5000}], "answer"),
    ([{**ENTRY, "alternatives": ["ok", ""]}], "alternatives"),
    ([{**ENTRY, "cards": [{"title": "x", "url": "javascript:alert(1)"}]}], "cards"),
    ([{**ENTRY, "colour": "red"}], "colour"),
    ([ENTRY, "just a string"], "entry 1"),
]
BAD_CSV = [
    ("question,answer\nq,a\n", "missing id"),
    ("id,question,answer,price\nx,q,a,1\n", "unknown column"),
    ('id,question,answer,cards\nx,q,a,"[not json"\n', "cards"),
    ("id,question,answer\nx,,a\n", "CSV row 2"),
]


def test_bad_imports_name_the_problem_and_change_nothing(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            await api.call("POST", "/api/v1/kb/import", a.tokens["admin"], json=KB[:3])
            before = await api.dump("shop-a")
            for body, named in BAD_JSON:
                status, answer = await api.call("POST", "/api/v1/kb/import?mode=replace", a.tokens["admin"], json=body)
                assert status == 422 and named in answer["message"], (body, answer)
            for text, named in BAD_CSV:
                status, answer = await api.call("POST", "/api/v1/kb/import?mode=replace", a.tokens["admin"],
                                                data=text.encode(), headers={"Content-Type": "text/csv"})
                assert status == 422 and named in answer["message"], (text, answer)
            status, answer = await api.call("POST", "/api/v1/kb/import", a.tokens["admin"], data=b"{not json",
                                            headers={"Content-Type": "application/json"})
            assert status == 422 and "JSON" in answer["message"]
            status, answer = await api.call("POST", "/api/v1/kb/import", a.tokens["admin"], data=b"id\tq",
                                            headers={"Content-Type": "text/plain"})
            assert status == 415
            status, answer = await api.call("POST", "/api/v1/kb/import?mode=wipe", a.tokens["admin"], json=KB)
            assert status == 422 and "mode" in answer["message"]
            status, answer = await api.call("PUT", "/api/v1/kb/other-id", a.tokens["admin"], json=ENTRY)
            assert status == 422 and "id" in answer["message"]
            status, answer = await api.call("GET", "/api/v1/kb/export?format=xlsx", a.tokens["admin"])
            assert status == 422 and "format" in answer["message"]
            assert await api.dump("shop-a") == before
    run(main())


def test_a_merchant_never_sees_nor_changes_anothers_knowledge_base(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await api.tenant("shop-a"), await api.tenant("shop-b")
            await api.call("PUT", "/api/v1/kb/gift-card", b.tokens["admin"], json=ENTRY)
            before = await api.dump("shop-b")
            for role in ("owner", "admin", "supervisor", "agent", "api"):
                _, listing = await api.call("GET", "/api/v1/kb", a.tokens[role])
                assert listing["items"] == []
                status, _ = await api.call("GET", "/api/v1/kb/gift-card", a.tokens[role])
                assert status == 404
            for role in ("owner", "admin", "supervisor", "agent", "api"):
                await api.call("DELETE", "/api/v1/kb/gift-card", a.tokens[role])
                await api.call("POST", "/api/v1/kb/import?mode=replace", a.tokens[role], json=KB[:2])
            assert await api.dump("shop-b") == before
    run(main())


def test_bot_settings_are_validated_by_name(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            for bot, named in (({"answer_threshold": 2}, "answer_threshold"), ({"texts": {"hello": "x"}}, "hello"),
                               ({"keyword_replies": [{"keywords": [], "reply": "x"}]}, "keywords"),
                               ({"mood": "happy"}, "mood")):
                status, answer = await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"], json={"settings": {"bot": bot}})
                assert status == 422 and named in json.dumps(answer), (bot, answer)
            good = {"enabled": True, "texts": {"welcome": {"zh": "欢迎光临", "en": "Welcome"}},
                    "keyword_replies": [{"keywords": ["地址"], "reply": "我们在上海。"}]}
            status, merchant = await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"], json={"settings": {"bot": good}})
            assert status == 200 and merchant["settings"]["bot"]["texts"]["welcome"]["zh"] == "欢迎光临"
            status, answer = await api.call("POST", "/api/v1/kb/try", a.tokens["agent"], json={"text": "你好"})
            assert status == 503 and "bot" in answer["message"]  # this app has no bot workers
    run(main())
