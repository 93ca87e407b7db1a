"""A merchant's `settings.tickets`, validated: departments, the status flow, priorities with
their SLA, types and custom fields. Every part has a working default, so a merchant that never
configures tickets still gets after-sales, warehouse, finance and logistics departments and the
usual new → in progress → waiting on customer → resolved → closed flow."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]


class _Model(BaseModel):
    # strict: a client's JSON of the wrong type is refused naming the field ("3600" is not 3600,
    # 0 is not false); what is stored was validated so, and is read back leniently (ticket_settings)
    model_config = ConfigDict(extra="forbid", strict=True)


class Department(_Model):
    id: Id
    name: Label                                   # shown in the console: "售后 After-sales"


class Status(_Model):
    id: Id
    name: Label
    # what the customer reads in the chat when a ticket enters this status (empty: not told)
    notify: Annotated[str, StringConstraints(max_length=500)] = ""


class Sla(_Model):
    resolve_within_s: Annotated[int, Field(ge=1, le=90 * 86400)]
    remind_before_s: Annotated[int, Field(ge=0, le=90 * 86400)] = 0   # a reminder this long before the deadline


class CustomField(_Model):
    name: Id
    label: Label
    type: Literal["text", "number", "choice"] = "text"
    required: bool = False
    options: Annotated[list[Label], Field(max_length=50)] = []


PRIORITIES = ("low", "normal", "high", "urgent")

_DEPARTMENTS = [Department(id="after_sales", name="售后 After-sales"), Department(id="warehouse", name="仓储 Warehouse"),
                Department(id="finance", name="财务 Finance"), Department(id="logistics", name="物流 Logistics")]
_STATUSES = [
    Status(id="new", name="新建 New", notify="您的工单已创建，我们会尽快处理。Your ticket has been opened; we are on it."),
    Status(id="in_progress", name="处理中 In progress", notify="您的工单正在处理中。Your ticket is being worked on."),
    Status(id="waiting_customer", name="待您回复 Waiting on you",
           notify="我们需要您补充一些信息，请在对话中回复。We need a little more information from you: please reply here."),
    Status(id="resolved", name="已解决 Resolved", notify="您的工单已解决。Your ticket has been resolved."),
    Status(id="closed", name="已关闭 Closed"),
]
_FLOW = {"new": ["in_progress", "closed"], "in_progress": ["waiting_customer", "resolved", "closed"],
         "waiting_customer": ["in_progress", "resolved", "closed"], "resolved": ["closed", "in_progress"],
         "closed": ["in_progress"]}
_SLA = {"urgent": Sla(resolve_within_s=4 * 3600, remind_before_s=3600),
        "high": Sla(resolve_within_s=24 * 3600, remind_before_s=4 * 3600),
        "normal": Sla(resolve_within_s=72 * 3600, remind_before_s=12 * 3600),
        "low": Sla(resolve_within_s=7 * 86400, remind_before_s=86400)}


class TicketSettings(_Model):
    departments: Annotated[list[Department], Field(min_length=1, max_length=50)] = _DEPARTMENTS
    statuses: Annotated[list[Status], Field(min_length=2, max_length=20)] = _STATUSES
    flow: dict[Id, list[Id]] = _FLOW               # status -> the statuses it may move to
    done: list[Id] = ["resolved", "closed"]         # the SLA stops here
    paused: list[Id] = ["waiting_customer"]         # the SLA clock stops while the customer owes an answer
    sla: dict[Literal[PRIORITIES], Sla] = _SLA      # type: ignore[valid-type]
    escalate_to: Optional[Id] = None                # a breached ticket moves to this department (else stays)
    types: Annotated[list[Label], Field(max_length=50)] = ["退换货 Return/exchange", "物流 Delivery", "退款 Refund",
                                                           "质量问题 Quality", "发票 Invoice", "其他 Other"]
    fields: Annotated[list[CustomField], Field(max_length=30)] = []

    @model_validator(mode="after")
    def _consistent(self) -> "TicketSettings":
        statuses = [s.id for s in self.statuses]
        departments = [d.id for d in self.departments]
        for name, ids in (("statuses", statuses), ("departments", departments),
                          ("fields", [f.name for f in self.fields])):
            if len(ids) != len(set(ids)):
                raise ValueError(f"{name}: ids must be unique")
        for source, targets in self.flow.items():
            for status in [source, *targets]:
                if status not in statuses:
                    raise ValueError(f"flow: {status!r} is not one of the statuses {statuses}")
        for name, ids in (("done", self.done), ("paused", self.paused)):
            for status in ids:
                if status not in statuses:
                    raise ValueError(f"{name}: {status!r} is not one of the statuses {statuses}")
        if self.escalate_to is not None and self.escalate_to not in departments:
            raise ValueError(f"escalate_to: {self.escalate_to!r} is not one of the departments {departments}")
        missing = [p for p in PRIORITIES if p not in self.sla]
        if missing:
            raise ValueError(f"sla: no SLA for priority {missing[0]!r}")
        for f in self.fields:
            if f.type == "choice" and not f.options:
                raise ValueError(f"fields.{f.name}: a choice field needs options")
        return self

    @property
    def first_status(self) -> str:
        return self.statuses[0].id

    def status(self, status_id: str) -> Status:
        return next(s for s in self.statuses if s.id == status_id)

    def department(self, department_id: str) -> Department:
        return next(d for d in self.departments if d.id == department_id)

    def check_fields(self, values: dict) -> dict:
        """The custom field values, checked against their definitions (ValueError names the field)."""
        known = {f.name: f for f in self.fields}
        for name in values:
            if name not in known:
                raise ValueError(f"fields.{name}: no such custom field (known: {sorted(known)})")
        out = {}
        for f in self.fields:
            value = values.get(f.name)
            if value is None or value == "":
                if f.required:
                    raise ValueError(f"fields.{f.name}: required")
                continue
            if f.type == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"fields.{f.name}: must be a number")
            if f.type in ("text", "choice") and (not isinstance(value, str) or len(value) > 1000):
                raise ValueError(f"fields.{f.name}: must be text of at most 1000 characters")
            if f.type == "choice" and value not in f.options:
                raise ValueError(f"fields.{f.name}: must be one of {f.options}")
            out[f.name] = value
        return out


def ticket_settings(merchant_record: dict) -> TicketSettings:
    """The stored settings (checked strictly when saved; older records may hold coerced values)."""
    return TicketSettings.model_validate((merchant_record.get("settings") or {}).get("tickets") or {}, strict=False)
