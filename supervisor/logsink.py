"""The one JSONL log file every process writes through: dated, size-rotated, redacted, rate-limited.

Records follow the layout upstream's `logs.tail` readers parse (`{"0": message, "_meta": {...}, "time",
"hostname", "message"}`) plus our own `subsystem`, `worker` and `level`. Rotation follows upstream: at
`maxFileBytes` the file moves to `<name>.1.log` ... `.5.log` and a fresh file starts.

A flood must never drown what matters. Each source (a worker, the gateway, a library logger) has its own
token bucket, and the sink says how many records it dropped, once per second. Warnings and errors of one
source that differ only in their numbers (a refusal per request from one address) are folded: the first is
written, the rest counted into one line each second. Records written with `keep` (the supervisor's own
lifecycle: spawn, exit, restart, reload, failed) are never throttled or folded.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

LEVEL_IDS = {"trace": 1, "debug": 2, "info": 3, "warn": 4, "warning": 4, "error": 5, "fatal": 6,
             "critical": 6}
KEEP_ARCHIVES = 5
FOLD_LEVELS = frozenset({"warn", "warning", "error", "fatal", "critical"})
FOLD_KEYS_MAX = 10_000
_VARYING = re.compile(r"[0-9a-fA-F]{8,}|\d+")


def mask(secret: str) -> str:
    return f"{secret[:6]}...{secret[-4:]}" if len(secret) >= 18 else "***"


class Redactor:
    """Replaces known secret values wherever they appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, mask(s))
        return text


def secrets_in(cfg: dict[str, Any], auth: Any = None) -> list[str]:
    """Every secret value the gateway knows, so the sink can mask it wherever it appears."""
    from openclaw_sup.config.schema import secret_values

    found = list(secret_values(cfg))
    for key in ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD"):
        if os.environ.get(key):
            found.append(os.environ[key])
    if auth is not None:
        found += [s for s in (getattr(auth, "token", None), getattr(auth, "password", None)) if s]
    return found


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()
        self.dropped = 0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False


class LogSink:
    def __init__(self, file: Path | None, profile: str | None, *, max_file_bytes: int = 104_857_600,
                 redactor: Redactor | None = None, console: TextIO | None = None,
                 rate: float = 2_000, burst: float = 10_000) -> None:
        self._fixed = file
        self._profile = profile
        self.max_file_bytes = max_file_bytes
        self.redact = redactor or Redactor()
        self.console = console
        self.hostname = socket.gethostname()
        self._rate, self._burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}
        self._folds: dict[tuple[str, str, str], list[Any]] = {}  # key -> [count, last message, subsystem, worker]
        self._fh: Any = None
        self._date = ""
        self.path: Path | None = None
        self._size = 0

    # -- paths ---------------------------------------------------------------------------------------

    def _path_for(self, date: str) -> Path:
        if self._fixed is not None:
            return self._fixed
        name = f"openclaw-{self._profile}-{date}.log" if self._profile else f"openclaw-{date}.log"
        base = Path("/tmp/openclaw")
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.access(base, os.W_OK):
                raise PermissionError
        except OSError:
            base = Path(os.environ.get("TMPDIR", "/tmp")) / f"openclaw-{os.getuid()}"
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
        return base / name

    def _open(self, date: str) -> None:
        self.close()
        self._date = date
        self.path = self._path_for(date)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh = os.fdopen(fd, "ab", buffering=64 * 1024)
        self._size = os.fstat(fd).st_size

    def _rotate(self) -> None:
        assert self.path is not None
        self.close()
        stem = str(self.path)[:-4] if str(self.path).endswith(".log") else str(self.path)
        for i in range(KEEP_ARCHIVES, 0, -1):
            src = Path(f"{stem}.{i - 1}.log") if i > 1 else self.path
            if src.exists():
                os.replace(src, f"{stem}.{i}.log")
        self._open(self._date)

    def retarget(self, file: Path | None, max_file_bytes: int) -> None:
        """Switch file or size limit in place (a config reload); the next record opens the new file."""
        if file != self._fixed:
            self.close()
            self._fixed = file
        self.max_file_bytes = max_file_bytes

    # -- writing -------------------------------------------------------------------------------------

    def write(self, level: str, message: str, *, subsystem: str = "supervisor", worker: str | None = None,
              ts: float | None = None, keep: bool = False, **extra: Any) -> bool:
        """Append one record; False if it was folded into a repeat count or its source was throttled."""
        if not keep:
            source = worker or subsystem
            if level.lower() in FOLD_LEVELS and self._fold(source, level, message, subsystem, worker):
                return False
            bucket = self._buckets.get(source)
            if bucket is None:
                bucket = self._buckets[source] = TokenBucket(self._rate, self._burst)
            if not bucket.take(time.monotonic()):
                return False
        self._append(level, message, subsystem, worker, ts, extra)
        return True

    def _fold(self, source: str, level: str, message: str, subsystem: str, worker: str | None) -> bool:
        """True if a record of the same shape from `source` was written since the last report (then counted)."""
        key = (source, level, _VARYING.sub("#", message[:512]))
        seen = self._folds.get(key)
        if seen is not None:
            seen[0] += 1
            seen[1] = message
            return True
        if len(self._folds) < FOLD_KEYS_MAX:
            self._folds[key] = [0, message, subsystem, worker]
        return False

    def _append(self, level: str, message: str, subsystem: str, worker: str | None, ts: float | None,
                extra: dict[str, Any]) -> None:
        when = datetime.fromtimestamp(ts if ts is not None else time.time(), tz=UTC)
        date = when.astimezone().strftime("%Y-%m-%d")
        if self._fh is None or (date != self._date and self._fixed is None):
            self._open(date)
        message = self.redact(message)
        iso = when.isoformat(timespec="milliseconds")
        lvl = level.lower()
        rec: dict[str, Any] = {
            "0": message,
            "_meta": {"logLevelId": LEVEL_IDS.get(lvl, 3), "logLevelName": lvl.upper(),
                      "name": subsystem, "date": iso.replace("+00:00", "Z"), "hostname": self.hostname},
            "time": iso,
            "hostname": self.hostname,
            "message": message,
            "level": lvl,
            "subsystem": subsystem,
        }
        if worker:
            rec["worker"] = worker
        if extra:
            rec.update(extra)
        line = orjson.dumps(rec) + b"\n"
        self._fh.write(line)
        self._size += len(line)
        if self.console is not None:
            who = f"[{worker}] " if worker else ""
            print(f"{iso[11:23]} {lvl:5} {subsystem}: {who}{message}", file=self.console, flush=True)
        if self._size >= self.max_file_bytes:
            self._rotate()

    def report_drops(self) -> None:
        """Say, once per call (the supervisor calls it each second), what was folded and which sources
        were throttled; written through to the file at once (no later record may come to flush it)."""
        folds, self._folds = self._folds, {}
        wrote = False
        for (_source, level, _shape), (n, last, subsystem, worker) in folds.items():
            if n:
                self._append(level, f"{last} (repeated {n} more times)", subsystem, worker, None, {"repeated": n})
                wrote = True
        for source, bucket in self._buckets.items():
            if bucket.dropped:
                n, bucket.dropped = bucket.dropped, 0
                self._append("warn", f"log rate limit: dropped {n} records from {source}", "supervisor",
                             None, None, {})
                wrote = True
        if wrote:
            self.flush()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None


