"""`diagnostics.stability`: a bounded record of what happened to the gateway's processes, in upstream's shape.

The supervisor records worker exits, kills, crash loops, in-place restarts and config reloads as they happen;
`openclaw gateway stability` reads them (newest last, filtered by `type` and `sinceSeq`, at most `limit`).
"""

from __future__ import annotations

from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.protocol import invalid

CAPACITY = 1000
DEFAULT_LIMIT = 100


class StabilityLog:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.seq = 0
        self.dropped = 0

    def record(self, type_: str, **fields: Any) -> None:
        if len(self.records) == self.capacity:
            self.dropped += 1
        self.seq += 1
        self.records.append({"seq": self.seq, "ts": now_ms(), "type": type_,
                             **{k: v for k, v in fields.items() if v is not None}})

    def snapshot(self, params: dict[str, Any]) -> dict[str, Any]:
        limit = _count(params.get("limit"), "limit", DEFAULT_LIMIT)
        if not 1 <= limit <= CAPACITY:
            raise invalid(f"invalid diagnostics.stability params: limit must be between 1 and {CAPACITY}",
                          field="limit")
        since = _count(params.get("sinceSeq"), "sinceSeq", None)
        type_ = params.get("type")
        if type_ is not None and (not isinstance(type_, str) or not type_.strip()):
            raise invalid("invalid diagnostics.stability params: type must be a non-empty string", field="type")
        kept = [r for r in self.records if (not type_ or r["type"] == type_.strip())
                and (since is None or r["seq"] > since)]
        out: dict[str, Any] = {
            "generatedAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "capacity": self.capacity, "count": len(kept), "dropped": self.dropped,
            "events": kept[-limit:], "summary": {"byType": dict(Counter(r["type"] for r in kept))},
        }
        if kept:
            out.update(firstSeq=kept[0]["seq"], lastSeq=kept[-1]["seq"])
        return out


def _count(value: Any, name: str, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"invalid diagnostics.stability params: {name} must be a non-negative integer", field=name)
    return value
