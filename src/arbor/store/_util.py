"""Small helpers shared by the repositories."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["aware", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(name: str, value: datetime) -> datetime:
    """``value`` in UTC, or a ValueError naming ``name`` when it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value.isoformat()}")
    return value.astimezone(UTC)
