"""Times as the store keeps them and as people give them: the one home of parsing and writing them.

The store holds times as ISO 8601 text (SQLite has no time zone type; text keeps both databases identical).
`utc_text` writes one: UTC, to the microsecond, one width, so comparing the texts compares the times.
`parse_time` reads a stored one back leniently (None for empty or unparseable text, so a value that does not
parse never decides anything); `parse_when` reads a time a person gave (a date or an ISO 8601 time) strictly,
saying what was wrong. Naive means UTC throughout. `in_utc_range` is the validator of the request and load
models: a time must exist in UTC (years 1 to 9999 once its offset is applied) to be stored.
"""

from __future__ import annotations

from datetime import datetime, timezone


def parse_when(text: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 time (naive: UTC); ValueError says what was wrong."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date or ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_time(value) -> datetime | None:
    """A stored time as an aware datetime (naive is UTC); None if empty or unparseable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def utc_text(value: datetime | None) -> str | None:
    """A time as the store keeps it: UTC, to the microsecond, one width (`2026-01-05T15:00:00.000000+00:00`),
    so that comparing the texts compares the times. Naive means UTC."""
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).isoformat(timespec="microseconds")


def in_utc_range(value):
    """A time must exist in UTC (it is stored as UTC text): years 1 to 9999 once its offset is applied."""
    if isinstance(value, datetime) and value.tzinfo is not timezone.utc:
        try:
            (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("out of range once converted to UTC (years 1 to 9999)") from None
    return value
