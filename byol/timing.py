"""How long, and until when: the durations every stage's plan line states."""

from __future__ import annotations

from datetime import datetime, timedelta


def format_duration(seconds: float) -> str:
    """45 s, 12 min, 2 h 05 min."""
    if seconds < 59.5:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def finish_time(seconds: float, now: datetime | None = None) -> str:
    """The clock time (HH:MM) `seconds` from now."""
    return ((now or datetime.now()) + timedelta(seconds=seconds)).strftime("%H:%M")
