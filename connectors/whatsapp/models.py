"""The shape of a WhatsApp Cloud API notification (the "messages" webhook field), as Meta's
webhook reference describes it. Strict: a string must be a string, a number a number, so a
malformed body fails here, naming the place (`entry.0.changes.0.value.messages.0.from`), before
anything is downloaded or stored. Unknown keys are ignored: Meta adds fields over versions."""
from __future__ import annotations

import base64
import binascii
import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_WA_ID = r"^[0-9]{1,20}$"               # a phone number in international form, digits only
_EPOCH = r"^[0-9]{1,12}$"               # Unix seconds, as a string
_ID = {"min_length": 1, "max_length": 256}
MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")


def digest_of(value: str) -> bytes | None:
    """A SHA-256 digest written as 64 hex digits or in base64 (Meta uses both), or None."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return bytes.fromhex(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class MediaRef(_Model):
    id: str = Field(**_ID)
    mime_type: str = Field(min_length=3, max_length=200)
    sha256: Optional[str] = Field(default=None, max_length=100)
    caption: Optional[str] = Field(default=None, max_length=4096)
    filename: Optional[str] = Field(default=None, max_length=1024)

    @field_validator("sha256")
    @classmethod
    def _a_digest(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and digest_of(value) is None:
            raise ValueError("not a SHA-256 digest (64 hex digits or base64 of 32 bytes)")
        return value


class Text(_Model):
    body: str = Field(min_length=1, max_length=65536)


class Reply(_Model):
    id: str = Field(**_ID)
    title: str = Field(min_length=1, max_length=1024)
    description: Optional[str] = Field(default=None, max_length=1024)


class Interactive(_Model):
    type: str = Field(max_length=64)
    button_reply: Optional[Reply] = None
    list_reply: Optional[Reply] = None


class Button(_Model):
    text: str = Field(min_length=1, max_length=1024)
    payload: Optional[str] = Field(default=None, max_length=1024)


class Location(_Model):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: Optional[str] = Field(default=None, max_length=1024)
    address: Optional[str] = Field(default=None, max_length=1024)


class System(_Model):
    body: str = Field(default="", max_length=4096)


class Message(_Model):
    sender: str = Field(alias="from", pattern=_WA_ID)
    id: str = Field(**_ID)
    timestamp: str = Field(pattern=_EPOCH)
    type: str = Field(min_length=1, max_length=64)
    text: Optional[Text] = None
    image: Optional[MediaRef] = None
    audio: Optional[MediaRef] = None
    video: Optional[MediaRef] = None
    document: Optional[MediaRef] = None
    sticker: Optional[MediaRef] = None
    interactive: Optional[Interactive] = None
    button: Optional[Button] = None
    location: Optional[Location] = None
    contacts: Optional[list[dict]] = Field(default=None, max_length=100)
    system: Optional[System] = None

    @model_validator(mode="after")
    def _has_its_part(self) -> "Message":
        needs = ("text", "interactive", "button", "location", "contacts") + MEDIA_TYPES
        if self.type in needs and getattr(self, self.type) is None:
            raise ValueError(f"a message of type {self.type!r} has no {self.type!r} object")
        return self


class StatusError(_Model):
    code: int
    title: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=1024)
    error_data: dict = Field(default_factory=dict)


class Status(_Model):
    id: str = Field(**_ID)
    status: str = Field(min_length=1, max_length=32)
    timestamp: str = Field(pattern=_EPOCH)
    recipient_id: str = Field(min_length=1, max_length=64)
    errors: list[StatusError] = Field(default_factory=list, max_length=20)


class Profile(_Model):
    name: str = Field(default="", max_length=512)


class Contact(_Model):
    wa_id: str = Field(pattern=_WA_ID)
    profile: Profile = Field(default_factory=Profile)


class Metadata(_Model):
    phone_number_id: str = Field(pattern=r"^[0-9]{1,32}$")
    display_phone_number: str = Field(default="", max_length=64)


class Value(_Model):
    messaging_product: Literal["whatsapp"]
    metadata: Metadata
    contacts: list[Contact] = Field(default_factory=list, max_length=1000)
    messages: list[Message] = Field(default_factory=list, max_length=1000)
    statuses: list[Status] = Field(default_factory=list, max_length=1000)


class Change(_Model):
    field: str = Field(min_length=1, max_length=128)
    value: dict                 # a Value when field == "messages" (inbound.read checks it, naming where)


class Entry(_Model):
    id: str = Field(pattern=r"^[0-9]{1,32}$")
    changes: list[Change] = Field(min_length=1, max_length=1000)


class Notification(_Model):
    object: Literal["whatsapp_business_account"]
    entry: list[Entry] = Field(min_length=1, max_length=1000)
