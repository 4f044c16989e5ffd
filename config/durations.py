"""The one duration grammar: what the schema accepts is exactly what the scheduler, heartbeats and RPCs parse.

Upstream's grammar: a number with an optional unit (`500ms`, `30s`, `20m`, `1h`, `2d`; a bare number takes the
field's default unit) or a composite whose every segment has a unit (`1h30m`, `2m30s`). Case and surrounding
blanks are ignored; no blanks inside. Weeks are not a unit upstream, so `2w` is refused everywhere.
"""

from __future__ import annotations

import re

UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SINGLE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_SEGMENT = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
HINT = "use a number with a unit (ms, s, m, h, d), e.g. 30s, 20m, 1h30m"


class DurationError(ValueError):
    pass


def parse_duration_ms(value: object, *, default_unit: str | None = "m") -> int:
    """`30m`, `1h30m`, `500ms`, `0m` -> milliseconds. A bare number (or a JSON number) takes `default_unit`,
    or is refused when `default_unit` is None. Raises DurationError naming the value and the fix."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DurationError(f"invalid duration {value!r}: {HINT}")
    if isinstance(value, (int, float)):
        if default_unit is None or value < 0 or value != value:
            raise DurationError(f"invalid duration {value!r}: {HINT}")
        return int(value * UNITS_MS[default_unit])
    text = value.strip().lower()
    single = _SINGLE.match(text)
    if single:
        unit = single.group(2) or default_unit
        if unit is None:
            raise DurationError(f"invalid duration {value!r}: a unit is required; {HINT}")
        return int(float(single.group(1)) * UNITS_MS[unit])
    total, consumed = 0.0, 0
    for seg in _SEGMENT.finditer(text):
        if seg.start() != consumed:
            break
        total += float(seg.group(1)) * UNITS_MS[seg.group(2)]
        consumed = seg.end()
    if consumed == 0 or consumed != len(text):
        raise DurationError(f"invalid duration {value!r}: {HINT}")
    return int(total)


def is_duration(value: object, *, default_unit: str | None = "m") -> bool:
    try:
        parse_duration_ms(value, default_unit=default_unit)
    except DurationError:
        return False
    return True
