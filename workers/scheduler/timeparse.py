"""Durations, instants and time zones as the cron and heartbeat config spell them.

Kept apart from the schedule math so the RPC validation, the heartbeat's active hours and the schedules
all read `20m`, `2026-03-29T02:30` and `Europe/Paris` the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openclaw_sup.config.durations import DurationError, parse_duration_ms

_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def duration_ms(text: object, *, default_unit: str | None = "m") -> int:
    """The config's one grammar (config/durations.py); a bare number takes `default_unit` (minutes, as
    upstream's heartbeat `every`), or is refused when `default_unit` is None."""
    return parse_duration_ms(text, default_unit=default_unit)


@lru_cache(maxsize=1)
def host_zone() -> tzinfo:
    """The host's zone with its DST rules (not a fixed offset): TZ, then /etc/localtime, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC


def zone(name: object) -> tzinfo:
    """An IANA zone; None, "" and "local" mean the host's zone. Raises ValueError naming the bad value."""
    if name is None or name == "" or name == "local":
        return host_zone()
    if not isinstance(name, str):
        raise ValueError(f"invalid time zone {name!r}: use an IANA name such as Europe/Paris or UTC")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC") from None


def parse_instant_ms(value: object, now_ms: int, tz: object = None) -> int:
    """`at`: epoch milliseconds, an ISO-8601 time (no offset -> `tz`, else UTC) or a delay such as `20m`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("schedule.at: expected an ISO time (2026-05-01T09:00:00Z) or a delay such as 20m")
    text = value.strip()
    with contextlib.suppress(DurationError):
        return now_ms + parse_duration_ms(text.removeprefix("+").strip(), default_unit=None)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"schedule.at: {value!r} is neither an ISO time (2026-05-01T09:00:00Z) nor a delay "
                         "such as 20m") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone(tz) if tz else UTC)
    return int(dt.timestamp() * 1000)


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hhmm_minutes(text: object, *, allow_24: bool = False) -> int:
    """`HH:MM` -> minutes after midnight; `24:00` only where an end of day is meant."""
    m = _HHMM.match(text) if isinstance(text, str) else None
    if m is None or (m.group(1) == "24" and (m.group(2) != "00" or not allow_24)):
        raise ValueError(f"invalid time of day {text!r}: use HH:MM (00:00-23:59{', or 24:00' if allow_24 else ''})")
    return int(m.group(1)) * 60 + int(m.group(2))
