"""`logs.tail`: read the JSONL log by byte cursor, as upstream's `logs.tail` does.

No cursor: the last `limit` lines within `maxBytes` of the end. A cursor: the lines written since, from a
line boundary. A cursor past the end (the file was rotated or truncated) starts over with `reset: true`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_LIMIT = 5000
MAX_BYTES = 1_000_000


def tail(path: Path | None, cursor: int | None = None, limit: int = 200, max_bytes: int = 250_000) -> dict[str, Any]:
    limit = max(1, min(int(limit), MAX_LIMIT))
    max_bytes = max(1, min(int(max_bytes), MAX_BYTES))
    shown = str(path) if path else ""
    try:
        size = os.path.getsize(path) if path else 0
    except OSError:
        size = 0
    result: dict[str, Any] = {"file": shown, "cursor": size, "size": size, "lines": []}
    if not path or size == 0:
        if cursor:
            result["reset"] = True
        return result
    reset = cursor is not None and cursor > size
    if reset:
        cursor = 0
    with open(path, "rb") as f:
        if cursor is None:
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(size - start)
            if start > 0:
                nl = data.find(b"\n")
                data = data[nl + 1:] if nl >= 0 else b""
            lines = data.splitlines()
            truncated = len(lines) > limit or start > 0
            lines = lines[-limit:]
            end = size
        else:
            f.seek(cursor)
            data = f.read(max_bytes)
            last_nl = data.rfind(b"\n")
            complete = data[:last_nl + 1] if last_nl >= 0 else b""
            lines = complete.splitlines()
            truncated = len(lines) > limit or cursor + len(data) < size
            lines = lines[:limit]
            end = cursor + sum(len(x) + 1 for x in lines)
    result.update(cursor=end, lines=[x.decode("utf-8", "replace") for x in lines])
    if truncated:
        result["truncated"] = True
    if reset:
        result["reset"] = True
    return result
