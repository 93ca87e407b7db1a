"""The bot's part of a conversation as a state machine (actors/session_bot.py), driven turn by
turn on a SessionActor with a test clock: pure logic — the runtime around it (hosts, the bot
pool, Redis) is exercised in tests/test_bot_ws.py."""
from __future__ import annotations

from actors.envelope import ActorRef, Envelope
from actors.session import SessionActor
from actors.session_bot import ANGRY_PRIORITY, BOT_TIMEOUT_S

CUSTOMER = {"kind": "visitor", "id": "v_1"}


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def session(**open_body):
    clock = Clock()
    s = SessionActor(ActorRef("session", "shop", "s1"), None, clock)
    turn(s, "open", {"customer_id": "v_1", "bot": True, "welcome": "您好 Hi", "connection": "gw/c1", **open_body})
    return s, clock


def turn(s: SessionActor, type_: str, body: dict):
    s.turn.clear()
    s.dispatch(Envelope(s.ref, type_, body))
    return s.turn


def say(s: SessionActor, text: str, cid: str = "m1"):
    return turn(s, "message", {"from": CUSTOMER, "connection": "gw/c1", "cid": cid, "kind": "text", "content": {"text": text}})


def test_a_new_conversation_starts_with_the_bot_and_its_welcome():
    s, _ = session()
    assert s.state["status"] == "bot"
    log = s.turn.logs
    assert [r["content"]["text"] for _, r in log] == ["您好 Hi"] and log[0][1]["from"]["kind"] == "bot"
    assert [e.type for e in s.turn.events] == ["session.created", "message.sent"] and s.turn.events[0].payload["bot"]
    assert not s.turn.sends  # nobody queued yet


def test_a_question_is_asked_of_the_bot_and_its_answer_becomes_a_message_and_an_event():
    s, _ = session()
    t = say(s, "退款多久到账")
    (service, ask), = t.asks
    assert service == "bot" and ask["text"] == "退款多久到账" and ask["actor"] == "session:shop:s1"
    assert "bot" in s.meta["t"]  # the timer for a missing answer
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "answer", "reason": "match",
                              "text": "1-3 个工作日", "entry_id": "refund-time", "score": 0.8, "candidates": []})
    assert [r["content"]["text"] for _, r in t.logs] == ["1-3 个工作日"]
    assert [(e.type, e.payload.get("entry_id")) for e in t.events] == [("bot.answered", "refund-time"),
                                                                        ("message.sent", None)]
    assert "bot" not in s.meta["t"] and s.state["status"] == "bot"
    # a late duplicate of that answer changes nothing
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "answer", "text": "again"})
    assert not t.logs and not t.events


def test_follow_ups_carry_the_customers_earlier_questions():
    s, _ = session()
    ask = say(s, "退款多久到账", "m1").asks[0][1]
    turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "answer", "text": "..."})
    ask = say(s, "信用卡呢", "m2").asks[0][1]
    assert ask["context"] == ["退款多久到账"]


def test_choices_are_offered_and_repeated_failures_are_counted():
    s, _ = session()
    ask = say(s, "发票").asks[0][1]
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "choices", "text": "您是想问",
                              "candidates": [{"id": "a", "question": "怎么开发票"}, {"id": "b", "question": "公司发票"}]})
    assert t.logs[0][1]["content"]["choices"] == [{"id": "a", "question": "怎么开发票"}, {"id": "b", "question": "公司发票"}]
    assert s.state["bot"]["failures"] == 1
    assert say(s, "都不是", "m2").asks[0][1]["failures"] == 1


def test_an_angry_customer_is_handed_over_with_priority_and_a_flag():
    s, _ = session(priority=1)
    ask = say(s, "气死了 我要投诉").asks[0][1]
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "handoff", "reason": "angry",
                              "text": "非常抱歉", "sentiment": "angry"})
    assert s.state["status"] == "queued" and s.state["priority"] == ANGRY_PRIORITY and s.state["flag"] == "angry"
    handoff = next(e for e in t.events if e.type == "bot.handoff")
    assert handoff.payload["reason"] == "angry" and handoff.payload["priority"] == ANGRY_PRIORITY
    assert [(e.target.kind, e.type) for e in t.sends] == [("customer", "arrive")]  # then the queue, as any arrival
    t = turn(s, "customer_info", {"last_agent": "", "last_served_at": None, "conversations": 1})
    (enqueue,) = t.sends
    assert enqueue.type == "enqueue" and enqueue.body["priority"] == ANGRY_PRIORITY and enqueue.body["flag"] == "angry"


def test_no_answer_in_time_hands_over_so_no_customer_waits_on_a_dead_bot():
    s, clock = session()
    ask = say(s, "在吗 有人吗 物流怎么查").asks[0][1]
    clock.now += BOT_TIMEOUT_S
    (timeout,) = s.due_timers(clock.now)
    s.turn.clear()
    s.dispatch(timeout)
    assert s.state["status"] == "queued"
    assert next(e for e in s.turn.events if e.type == "bot.handoff").payload["reason"] == "bot_unavailable"
    # the answer arriving after that is ignored
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "answer", "text": "late"})
    assert not t.logs


def test_outside_business_hours_the_bot_says_so_and_the_handover_leaves_a_message():
    s, _ = session(outside_hours=True, outside_message="非工作时间 closed")
    assert [r["content"]["text"] for _, r in s.turn.logs] == ["您好 Hi", "非工作时间 closed"]
    ask = say(s, "转人工").asks[0][1]
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "answer", "action": "handoff", "reason": "asked_for_human",
                              "text": "正在转接"})
    assert s.state["status"] == "offline"
    assert [r["content"]["text"] for _, r in t.logs] == ["非工作时间 closed"]
    assert not t.sends  # nobody queued at night


def test_a_picture_goes_straight_to_a_person():
    s, _ = session()
    t = turn(s, "message", {"from": CUSTOMER, "connection": "gw/c1", "cid": "p1", "kind": "image",
                            "content": {"attachment_id": "a" * 32, "name": "x.png", "mime": "image/png", "size": 1}})
    assert not t.asks and s.state["status"] == "queued"


def test_agent_assist_pushes_suggestions_to_agents_only():
    s, _ = session()
    s.state.update(status="assigned", agent_id="a1")
    turn(s, "subscribe", {"connection": "gw/agent", "role": "agent", "from": {"kind": "agent", "id": "a1", "role": "agent"}})
    t = say(s, "怎么开发票")
    (_, ask), = t.asks
    assert ask["mode"] == "assist"
    t = turn(s, "bot_reply", {"req": ask["req"], "mode": "assist", "seq": ask["seq"],
                              "suggestions": [{"id": "invoice", "question": "怎么开发票", "answer": "...", "score": 0.7}]})
    assert [c for c, _ in t.pushes] == ["gw/agent"]
    assert t.pushes[0][1]["t"] == "suggestions" and t.pushes[0][1]["items"][0]["id"] == "invoice"
