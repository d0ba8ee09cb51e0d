"""How account pages show a time: ``YYYY-MM-DD HH:MM``, always UTC (the templates add the "UTC" label).

One format for every language: nobody has to guess a day/month order, and the label says
which clock it is.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def iso(value: datetime) -> str:
    """For ``<time datetime=…>``."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
