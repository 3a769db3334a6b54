"""Events and what hangs off them: sessions, people, badge templates and attached files."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    BigIntKey,
    ModelOptions,
    PublicIdMixin,
    TenantMixin,
    TimestampMixin,
    UTCDateTime,
)


def validate_time_range(values: Mapping[str, Any]) -> dict[str, str]:
    """`ends_at` may not come before `starts_at`."""
    starts, ends = values.get("starts_at"), values.get("ends_at")
    if starts is not None and ends is not None and ends < starts:
        return {"ends_at": "must not be earlier than starts_at"}
    return {}


def _event_fk(column: str = "event.id") -> Any:
    return mapped_column(
        BigIntKey, ForeignKey(column, ondelete="CASCADE"), nullable=False, info={"parent": True}
    )


EVENT_STATUSES = ["draft", "open", "closed", "archived"]


class Event(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "event"
    __aether__ = ModelOptions(
        default_sort=("-starts_at",),
        validator=validate_time_range,
        title="Event",
        description="Something that happens: a conference, a fair, a gala.",
    )
    __table_args__ = (UniqueConstraint("account_id", "code"),)

    name: Mapped[str] = mapped_column(
        String(200), nullable=False, info={"sortable": True, "title": "Name"}
    )
    code: Mapped[str | None] = mapped_column(
        String(32), info={"pattern": r"^[A-Za-z0-9_-]+$", "sortable": True, "title": "Code"}
    )
    status: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        default="draft",
        info={"enum": EVENT_STATUSES, "default": "draft", "sortable": True},
    )
    starts_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), nullable=False, info={"sortable": True, "title": "Starts at"}
    )
    ends_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), info={"sortable": True, "title": "Ends at"}
    )
    timezone: Mapped[str] = mapped_column(
        String(64),
        nullable=False,
        default="UTC",
        info={"format": "iana-timezone", "default": "UTC", "title": "Time zone"},
    )
    venue: Mapped[str | None] = mapped_column(String(200), info={"sortable": True})
    capacity: Mapped[int | None] = mapped_column(
        Integer, info={"minimum": 0, "maximum": 2_147_483_647, "sortable": True}
    )
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON, nullable=False, default=dict, info={"json_type": "object", "default": {}}
    )


class EventSession(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "event_session"
    __aether__ = ModelOptions(
        default_sort=("starts_at",), validator=validate_time_range, title="Session"
    )
    __table_args__ = (Index("ix_event_session_account_id_event_id", "account_id", "event_id"),)

    event_id: Mapped[int] = _event_fk()
    title: Mapped[str] = mapped_column(String(200), nullable=False, info={"sortable": True})
    starts_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), nullable=False, info={"sortable": True}
    )
    ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), info={"sortable": True})
    room: Mapped[str | None] = mapped_column(String(100), info={"sortable": True})
    capacity: Mapped[int | None] = mapped_column(
        Integer, info={"minimum": 0, "maximum": 2_147_483_647, "sortable": True}
    )


class EventPerson(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "event_person"
    __aether__ = ModelOptions(default_sort=("last_name", "first_name"), title="Person")
    __table_args__ = (Index("ix_event_person_account_id_event_id", "account_id", "event_id"),)

    event_id: Mapped[int] = _event_fk()
    first_name: Mapped[str] = mapped_column(String(100), nullable=False, info={"sortable": True})
    last_name: Mapped[str] = mapped_column(String(100), nullable=False, info={"sortable": True})
    email: Mapped[str | None] = mapped_column(
        String(320), info={"format": "email", "sortable": True}
    )
    company: Mapped[str | None] = mapped_column(String(200), info={"sortable": True})
    tags: Mapped[list[str]] = mapped_column(
        JSON,
        nullable=False,
        default=list,
        info={"json_type": "array", "items": "string", "default": []},
    )
    checked_in_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), info={"sortable": True}
    )


BADGE_LAYOUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["elements"],
    "properties": {
        "elements": {
            "type": "array",
            "maxItems": 200,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["field", "x", "y", "font_size"],
                "properties": {
                    "field": {"type": "string", "maxLength": 100},
                    "x": {"type": "number"},
                    "y": {"type": "number"},
                    "font_size": {"type": "number", "exclusiveMinimum": 0},
                },
            },
        }
    },
}


class EventBadgeTemplate(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "event_badge_template"
    __aether__ = ModelOptions(default_sort=("name",), title="Badge template")
    __table_args__ = (
        Index("ix_event_badge_template_account_id_event_id", "account_id", "event_id"),
    )

    event_id: Mapped[int] = _event_fk()
    name: Mapped[str] = mapped_column(String(100), nullable=False, info={"sortable": True})
    width_mm: Mapped[float] = mapped_column(
        Double, nullable=False, info={"minimum": 10, "maximum": 500}
    )
    height_mm: Mapped[float] = mapped_column(
        Double, nullable=False, info={"minimum": 10, "maximum": 500}
    )
    is_default: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, info={"default": False}
    )
    layout: Mapped[dict[str, Any]] = mapped_column(
        JSON,
        nullable=False,
        default=lambda: {"elements": []},
        info={
            "json_type": "object",
            "json_schema": BADGE_LAYOUT_SCHEMA,
            "default": {"elements": []},
        },
    )


EventFileRole = Literal["attachment", "logo", "banner", "slides", "photo"]
EVENT_FILE_ROLES = list(get_args(EventFileRole))


class EventFile(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "event_file"
    __aether__ = ModelOptions(default_sort=("position",), title="Event file")
    __table_args__ = (Index("ix_event_file_account_id_file_id", "account_id", "file_id"),)

    event_id: Mapped[int] = _event_fk()
    file_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("file.id", ondelete="RESTRICT"), nullable=False
    )
    role: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        default="attachment",
        info={"enum": EVENT_FILE_ROLES, "default": "attachment", "sortable": True},
    )
    title: Mapped[str | None] = mapped_column(String(200), info={"sortable": True})
    position: Mapped[int] = mapped_column(
        Integer,
        nullable=False,
        default=0,
        info={
            "default": 0,
            "sortable": True,
            "minimum": -2_147_483_648,
            "maximum": 2_147_483_647,
        },
    )


__all__ = [
    "Event",
    "EventBadgeTemplate",
    "EventFile",
    "EventPerson",
    "EventSession",
]
