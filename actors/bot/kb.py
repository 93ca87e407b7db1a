"""Knowledge-base entries: validated, and read from / written to JSON and CSV.

An entry is one thing customers ask: a question, other ways they ask it (`alternatives`),
the answer, optional message cards sent with it, a category. JSON is a list of entries; CSV
has the columns `id, question, answer, alternatives, category, cards` with alternatives
separated by `|` and cards as a JSON list (spreadsheet-friendly: one entry per row).
"""
from __future__ import annotations

import csv
import io
import re
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_ENTRIES = 5000
CSV_COLUMNS = ("id", "question", "answer", "alternatives", "category", "cards")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KBError(ValueError):
    """A knowledge base that can't be used; the message names the entry and the field."""


class Card(BaseModel):
    """A message card sent with an answer: a link, a product or an image."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["link", "product", "image"] = "link"
    title: str = Field(min_length=1, max_length=200)
    url: str = Field(default="", max_length=2000, pattern=r"^(https?://\S+)?$")
    image: str = Field(default="", max_length=2000, pattern=r"^(https?://\S+)?$")
    description: str = Field(default="", max_length=1000)


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    id: str = Field(min_length=1, max_length=64)
    question: str = Field(min_length=1, max_length=500)
    answer: str = Field(min_length=1, max_length=4000)
    alternatives: list[str] = Field(default_factory=list, max_length=100)
    category: str = Field(default="", max_length=64)
    cards: list[Card] = Field(default_factory=list, max_length=10)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("must be 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit")
        return v

    @field_validator("alternatives")
    @classmethod
    def _alternatives(cls, v: list[str]) -> list[str]:
        out = [a.strip() for a in v]
        for a in out:
            if not a or len(a) > 500:
                raise ValueError("each alternative must be 1-500 characters")
        return list(dict.fromkeys(out))

    def phrasings(self) -> list[str]:
        return [self.question, *self.alternatives]

    def to_dict(self) -> dict:
        return self.model_dump(exclude_defaults=False)


def _error(where: str, exc: ValidationError) -> KBError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return KBError(f"{where}: {field}: {first['msg']}")


def parse_entries(items: object, where: str = "entry", first: int = 0) -> list[Entry]:
    """Validate a list of entry dicts; ids must be unique."""
    if not isinstance(items, list):
        raise KBError(f"a knowledge base is a JSON list of entries, got {type(items).__name__}")
    if len(items) > MAX_ENTRIES:
        raise KBError(f"at most {MAX_ENTRIES} entries, got {len(items)}")
    entries, seen = [], set()
    for i, item in enumerate(items, start=first):
        if not isinstance(item, dict):
            raise KBError(f"{where} {i}: must be an object, got {type(item).__name__}")
        label = f"{where} {i} ({item.get('id')!r})" if "id" in item else f"{where} {i}"
        try:
            entry = Entry.model_validate(item)
        except ValidationError as exc:
            raise _error(label, exc) from None
        if entry.id in seen:
            raise KBError(f"{label}: id: {entry.id!r} appears twice")
        seen.add(entry.id)
        entries.append(entry)
    return entries


def from_json(data: bytes | str) -> list[Entry]:
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KBError(f"not valid JSON: {exc}") from None
    return parse_entries(items)


def to_json(entries: list[Entry]) -> bytes:
    return orjson.dumps([e.to_dict() for e in entries], option=orjson.OPT_INDENT_2)


def from_csv(data: bytes | str) -> list[Entry]:
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"id", "question", "answer"} - set(reader.fieldnames or [])
    if missing:
        raise KBError(f"CSV header must have id, question, answer (and optionally alternatives, category, cards);"
                      f" missing {', '.join(sorted(missing))}")
    unknown = set(reader.fieldnames or []) - set(CSV_COLUMNS)
    if unknown:
        raise KBError(f"CSV header: unknown column(s) {', '.join(sorted(unknown))}; known: {', '.join(CSV_COLUMNS)}")
    items = []
    for row_no, row in enumerate(reader, start=2):
        item = {k: (row.get(k) or "") for k in ("id", "question", "answer", "category")}
        item["alternatives"] = [a for a in (row.get("alternatives") or "").split("|") if a.strip()]
        cards = (row.get("cards") or "").strip()
        if cards:
            try:
                item["cards"] = orjson.loads(cards)
            except orjson.JSONDecodeError:
                raise KBError(f"CSV row {row_no}: cards: must be a JSON list") from None
        items.append(item)
    return parse_entries(items, where="CSV row", first=2)


def to_csv(entries: list[Entry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        cards = orjson.dumps([c.model_dump() for c in e.cards]).decode() if e.cards else ""
        writer.writerow([e.id, e.question, e.answer, "|".join(e.alternatives), e.category, cards])
    return out.getvalue()
