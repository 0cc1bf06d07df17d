"""The interaction event: what clients post and what flows through the event log."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ContextValue = Annotated[str, StringConstraints(max_length=128)]

MAX_CONTEXT_ENTRIES = 16
# The Unix epoch: replays of old logs and synthetic streams that count seconds from 0 are
# accepted; anything earlier is a unit or parsing mistake.
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(days=1)
PRICE_LEVELS = 7  # price_level is 0 (cheapest) .. PRICE_LEVELS - 1


class EventType(StrEnum):
    impression = "impression"
    view = "view"
    click = "click"
    like = "like"
    favorite = "favorite"
    add_to_cart = "add_to_cart"
    purchase = "purchase"
    rating = "rating"


class Event(BaseModel):
    """One user-item interaction. ``value`` is the label: 1/0 for click/no-click, the rating."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier | None = None
    user_id: Identifier
    item_id: Identifier
    event_type: EventType = EventType.click
    value: float = 1.0
    scenario: Identifier = "default"
    timestamp: datetime | None = None
    context: dict[ContextKey, ContextValue] = Field(
        default_factory=dict, max_length=MAX_CONTEXT_ENTRIES
    )
    price_level: int | None = Field(
        None, ge=0, le=PRICE_LEVELS - 1, strict=True,
        description="price band of the item, 0 (cheapest) to 6; optional (DUPN's price "
        "preference task learns from events that carry it)",
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("timestamp")
    @classmethod
    def _plausible_time(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value < EARLIEST_TIMESTAMP:
            raise ValueError(f"must not be before {EARLIEST_TIMESTAMP.date().isoformat()}")
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("must not be more than one day in the future")
        return value

    def completed(self, now: datetime | None = None) -> Event:
        """The event with the server-assigned defaults filled in (id and time)."""
        updates: dict[str, object] = {}
        if self.event_id is None:
            updates["event_id"] = uuid.uuid4().hex
        if self.timestamp is None:
            updates["timestamp"] = now or datetime.now(UTC)
        return self.model_copy(update=updates) if updates else self

    @staticmethod
    def server_time(start: datetime, position: int) -> datetime:
        """The time of the ``position``-th of events received together without one: ``start``
        (the server's) plus a microsecond per place, so that the trainer, which learns a batch
        in event-time order, keeps the order they came in even when the clock is coarse."""
        return start + timedelta(microseconds=position)

    @staticmethod
    def completed_in_order(events: Sequence[Event], now: datetime | None = None) -> list[Event]:
        """Each event :meth:`completed`, missing times by :meth:`server_time`."""
        start = now or datetime.now(UTC)
        return [e.completed(Event.server_time(start, k)) for k, e in enumerate(events)]

    @property
    def is_binary(self) -> bool:
        return self.event_type is not EventType.rating
