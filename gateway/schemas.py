"""Request bodies of the admin REST API, validated at the edge (pydantic, via quart-schema,
which also writes them into /openapi.json). Strict: no type coercion ("5" is not 5), unknown
fields refused, lengths bounded, no control characters in any text."""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from actors.bot.config import BotConfig
from storage.commerce.config import CommerceSettings
from storage.tickets.config import TicketSettings

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _no_control_in_line(v: str) -> str:
    if _CONTROL_LINE.search(v):
        raise ValueError("must not contain control characters")
    return v


def _no_control_in_text(v: str) -> str:
    if _CONTROL.search(v):
        raise ValueError("must not contain control characters (newlines and tabs are allowed)")
    return v


Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control_in_line)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=32), AfterValidator(_no_control_in_line)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(_no_control_in_text)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Color = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]
Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s]+$")]
Role = Literal["owner", "admin", "supervisor", "agent"]
Clock = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
AttrKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-\u4e00-\u9fff]{1,64}$")]
AttrValue = Union[Annotated[str, StringConstraints(max_length=1024), AfterValidator(_no_control_in_line)],
                  int, float, bool, None]
_ZONES = available_timezones()


def _known_zone(v: str) -> str:
    if v not in _ZONES:
        raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai)")
    ZoneInfo(v)
    return v


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Span(Strict):
    start: Clock
    end: Clock

    @model_validator(mode="after")
    def _ordered(self) -> "Span":
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class BusinessHours(Strict):
    timezone: Annotated[str, AfterValidator(_known_zone)] = "Asia/Shanghai"
    days: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
               Annotated[list[Span], Field(max_length=4)]] = {}


class Theme(Strict):
    primary_color: Optional[Color] = None
    accent_color: Optional[Color] = None
    icon_url: Optional[Url] = None
    avatar_url: Optional[Url] = None
    nickname: Optional[Name] = None


RuleField = Annotated[str, StringConstraints(
    pattern=r"^(channel|issue_type|visit_count|order_status|entry\.[a-z_]{1,32}|attr\.[A-Za-z0-9_.\-\u4e00-\u9fff]{1,64})$")]
RuleScalar = Union[Annotated[str, StringConstraints(max_length=256), AfterValidator(_no_control_in_line)], int, float,
                   bool]


class RuleTest(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    eq: Optional[RuleScalar] = None
    ne: Optional[RuleScalar] = None
    in_: Optional[Annotated[list[RuleScalar], Field(max_length=100)]] = Field(None, alias="in")
    gte: Optional[Union[int, float]] = None
    lte: Optional[Union[int, float]] = None
    contains: Optional[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = None


class DiversionRule(Strict):
    """分流: the first rule whose every condition holds chooses the group (actors/arrival.py)."""
    name: Optional[Name] = None
    when: Annotated[dict[RuleField, Union[RuleScalar, RuleTest]], Field(max_length=10)] = {}
    group: Id
    priority: Annotated[int, Field(ge=0, le=9)] = 0
    skills: Annotated[list[Label], Field(max_length=20)] = []


class BotTry(Strict):
    text: Text
    context: Annotated[list[Text], Field(max_length=5)] = []


class AlertRule(Strict):
    """预警: raise an alert while `metric` `op` `value` holds (gateway/monitor.py)."""
    name: Label
    metric: Literal["waiting", "longest_wait_s", "vip_waiting", "angry_waiting", "agents_online",
                    "response_p50_5m_s", "response_p90_5m_s", "response_p50_15m_s", "response_p90_15m_s",
                    "incoming_per_min", "abandoned_15m", "csat_1h"]
    op: Literal[">", ">=", "<", "<="] = ">"
    value: Annotated[float, Field(ge=0, le=1e9)]
    group: Optional[Id] = None   # per group: waiting, longest_wait_s, vip_waiting only

    @model_validator(mode="after")
    def _group_metric(self) -> "AlertRule":
        if self.group and self.metric not in ("waiting", "longest_wait_s", "vip_waiting"):
            raise ValueError(f"metric {self.metric} is merchant-wide; per group: waiting, longest_wait_s, vip_waiting")
        return self


class MerchantSettings(Strict):
    welcome_message: Optional[Text] = None
    business_hours: Optional[BusinessHours] = None
    theme: Optional[Theme] = None
    diversion: Optional[Annotated[list[DiversionRule], Field(max_length=50)]] = None
    idle_close_minutes: Optional[Annotated[int, Field(ge=1, le=1440)]] = None
    offline_message: Optional[Text] = None
    bot: Optional[BotConfig] = None   # the bot (actors/bot/config.py): on while the knowledge base has entries
    alerts: Optional[Annotated[list[AlertRule], Field(max_length=50)]] = None
    commerce: Optional[CommerceSettings] = None   # products and orders: built-in store or the merchant's HTTP API
    tickets: Optional[TicketSettings] = None      # departments, status flow, SLA per priority (storage/tickets)

    @model_validator(mode="after")
    def _unique_alert_names(self) -> "MerchantSettings":
        names = [a.name for a in self.alerts or []]
        if len(names) != len(set(names)):
            raise ValueError("alerts: rule names must be unique")
        return self


class MerchantUpdate(Strict):
    name: Optional[Name] = None
    settings: Optional[MerchantSettings] = None


class LoginBody(Strict):
    merchant: Id
    username: Username
    password: Password


class VisitorBody(Strict):
    merchant: Id


class CustomerIdentityBody(Strict):
    merchant: Id
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_no_control_in_line)]
    ts: int
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class TokenPrincipal(BaseModel):
    kind: Literal["agent", "visitor", "customer"]
    merchant: str
    id: str
    role: str


class TokenAnswer(BaseModel):
    """A token for `Authorization: Bearer` and the websocket's hello; `expires_at` in Unix seconds.
    A login also answers with the agent's record (`agent`)."""
    token: str
    expires_at: int
    principal: TokenPrincipal
    agent: Optional[dict] = None


class AgentCreate(Strict):
    username: Username
    name: Name
    password: Password
    role: Role = "agent"
    skills: Annotated[list[Label], Field(max_length=50)] = []
    groups: Annotated[list[Id], Field(max_length=50)] = []
    max_concurrent: Annotated[int, Field(ge=1, le=100)] = 5


class AgentUpdate(Strict):
    name: Optional[Name] = None
    role: Optional[Role] = None
    skills: Optional[Annotated[list[Label], Field(max_length=50)]] = None
    groups: Optional[Annotated[list[Id], Field(max_length=50)]] = None
    max_concurrent: Optional[Annotated[int, Field(ge=1, le=100)]] = None
    enabled: Optional[bool] = None


class PasswordBody(Strict):
    password: Password


class GroupRouting(Strict):
    strategy: Literal["least_load", "round_robin", "returning_customer", "skills", "manual"] = "least_load"
    required_skills: Annotated[list[Label], Field(max_length=20)] = []
    overflow_group: Optional[Id] = None
    overflow_after_s: Annotated[int, Field(ge=0, le=86400)] = 0
    overflow_max_waiting: Annotated[int, Field(ge=0, le=100000)] = 0
    returning_within_days: Annotated[int, Field(ge=0, le=365)] = 7


class GroupCreate(Strict):
    group_id: Id
    name: Name
    routing: GroupRouting = GroupRouting()


class GroupUpdate(Strict):
    name: Optional[Name] = None
    routing: Optional[GroupRouting] = None


class AttributesBody(Strict):
    attributes: Annotated[dict[AttrKey, AttrValue], Field(max_length=100)]


class QuickReplyCreate(Strict):
    shortcut: Label
    text: Text
    category: Annotated[str, StringConstraints(max_length=32), AfterValidator(_no_control_in_line)] = ""
    shared: bool = False  # merchant-wide (supervisors and up) or the caller's own


class QuickReplyUpdate(Strict):
    shortcut: Optional[Label] = None
    text: Optional[Text] = None
    category: Optional[Annotated[str, StringConstraints(max_length=32), AfterValidator(_no_control_in_line)]] = None


class ApiKeyCreate(Strict):
    name: Name


def changes(model: BaseModel) -> dict:
    """The fields the client actually sent (PATCH semantics)."""
    return model.model_dump(exclude_unset=True, by_alias=True)


def patch_of(model: BaseModel) -> dict:
    """A PATCH's changes; none at all is refused (422 naming the body)."""
    wanted = {k: v for k, v in changes(model).items() if v is not None}
    if not wanted:
        raise ValueError("body: nothing to change")
    return wanted
