"""Times from clients, as UTC: the one place a far-off offset is turned into a 400 instead of a driver overflow."""

from __future__ import annotations

from datetime import UTC, datetime

from upcoach.errors import InvalidRequest


def as_utc(value: datetime, param: str) -> datetime:
    """``value`` in UTC; naive values are read as UTC.

    Year 1 with a positive offset, or year 9999 with a negative one, has no UTC equivalent in ``datetime``: the
    overflow would surface as a 500 when the value is bound to a query, so it is a clear 400 naming the field here.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{param}: {value.isoformat()} is out of range in UTC", param=param) from None
