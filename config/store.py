"""Owned writes of `openclaw.json` and the dotted paths `config get|set|unset` address.

A write never leaves a half-written or invalid file behind: the new JSON goes to a 0600 temp file in the same
directory, is fsynced, the previous file is kept as `<config>.bak`, and a rename swaps it in (then the
directory is fsynced). A payload that fails validation or drops `gateway.mode` is refused, as upstream does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

from openclaw_sup.config.loader import ConfigError, load_json5, substitute_env
from openclaw_sup.config.paths import ensure_private_dir
from openclaw_sup.config.schema import REDACTED, validate

_INDEX = re.compile(r"^[0-9]+$")


class ConfigPathNotFound(KeyError):
    """`config get|unset` on a path that is not there (upstream: exit 1, `Config path not found: <path>`)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"Config path not found: {self.path}"


def parse_path(raw: str) -> list[str]:
    """Split `a.b[0].c` / `a.b.0.c` into segments; `\\.` escapes a dot inside a key."""
    parts: list[str] = []
    current = ""
    text = raw.strip()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i + 1]
            i += 2
            continue
        if ch in ".[":
            if current:
                parts.append(current)
            current = ""
            if ch == "[":
                close = text.find("]", i)
                if close == -1:
                    raise ValueError(f'Invalid path (missing "]"): {raw}')
                inside = text[i + 1:close].strip()
                if not inside:
                    raise ValueError(f'Invalid path (empty "[]"): {raw}')
                parts.append(inside)
                i = close
            i += 1
            continue
        current += ch
        i += 1
    if current:
        parts.append(current)
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise ValueError("Path is empty.")
    return parts


def _step(node: Any, seg: str) -> tuple[bool, Any]:
    if isinstance(node, list):
        if not _INDEX.match(seg) or int(seg) >= len(node):
            return False, None
        return True, node[int(seg)]
    if isinstance(node, dict) and seg in node:
        return True, node[seg]
    return False, None


def get_path(data: Any, path: str | list[str]) -> Any:
    """The value at a path; raises ConfigPathNotFound."""
    node = data
    for seg in parse_path(path) if isinstance(path, str) else path:
        found, node = _step(node, seg)
        if not found:
            raise ConfigPathNotFound(path if isinstance(path, str) else ".".join(path))
    return node


def set_path(data: dict[str, Any], path: str | list[str], value: Any) -> dict[str, Any]:
    """A copy of `data` with `value` at `path`, creating objects (or lists, before a numeric segment) on the way."""
    segs = parse_path(path) if isinstance(path, str) else list(path)
    out = copy.deepcopy(data)
    node: Any = out
    for seg, nxt in pairwise(segs):
        if isinstance(node, list):
            if not _INDEX.match(seg):
                raise ValueError(f'Expected numeric index for array segment "{seg}"')
            idx = int(seg)
            while len(node) <= idx:
                node.append(None)
            if not isinstance(node[idx], dict | list):
                node[idx] = [] if _INDEX.match(nxt) else {}
            node = node[idx]
        elif isinstance(node, dict):
            if not isinstance(node.get(seg), dict | list):
                node[seg] = [] if _INDEX.match(nxt) else {}
            node = node[seg]
        else:
            raise ValueError(f'Cannot traverse into "{seg}" (not an object)')
    last = segs[-1]
    if isinstance(node, list):
        if not _INDEX.match(last):
            raise ValueError(f'Expected numeric index for array segment "{last}"')
        idx = int(last)
        while len(node) <= idx:
            node.append(None)
        node[idx] = value
    else:
        node[last] = value
    return out


def unset_path(data: dict[str, Any], path: str | list[str]) -> dict[str, Any]:
    """A copy of `data` without `path`; raises ConfigPathNotFound when it is not there."""
    segs = parse_path(path) if isinstance(path, str) else list(path)
    out = copy.deepcopy(data)
    missing = ConfigPathNotFound(path if isinstance(path, str) else ".".join(path))
    try:
        parent = get_path(out, segs[:-1]) if len(segs) > 1 else out
    except ConfigPathNotFound:
        raise missing from None
    if not _step(parent, segs[-1])[0]:
        raise missing
    if isinstance(parent, list):
        del parent[int(segs[-1])]
    else:
        del parent[segs[-1]]
    return out


def serialize(data: dict[str, Any]) -> bytes:
    """Owned writes are plain JSON (comments and JSON5 syntax do not survive), as upstream."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _contains_sentinel(value: Any) -> bool:
    if isinstance(value, str):
        return value == REDACTED
    if isinstance(value, dict):
        return any(_contains_sentinel(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_sentinel(v) for v in value)
    return False


def check_write(path: Path, data: dict[str, Any], env: dict[str, str] | None = None) -> None:
    """Refuse what upstream refuses: an invalid result, a dropped `gateway.mode`, a redaction placeholder."""
    where = f"Config write rejected: {path}"
    report = validate(substitute_env(data, env))
    if not report.ok:
        raise ConfigError("\n".join([f"{where}:", *(i.line() for i in report.errors)]))
    if _contains_sentinel(data):
        raise ConfigError(f"{where}: the value {REDACTED} is a redaction placeholder, not a real value")
    try:
        previous = load_json5(path, substitute=False)
    except ConfigError:
        previous = {}
    had_mode = isinstance(previous.get("gateway"), dict) and "mode" in previous["gateway"]
    has_mode = isinstance(data.get("gateway"), dict) and "mode" in data["gateway"]
    if had_mode and not has_mode:
        raise ConfigError(f"{where}: the change would drop gateway.mode")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, blob: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_config_atomic(path: Path, data: dict[str, Any], env: dict[str, str] | None = None) -> None:
    """Validate, then write `data` as JSON: temp file (0600) + fsync, `<config>.bak`, rename, fsync the dir."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"Config write rejected: {path} is a symlink; point OPENCLAW_CONFIG_PATH at the real file")
    check_write(path, data, env)
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    bak = path.with_name(path.name + ".bak")
    bak_tmp = path.with_name(f".{bak.name}.{os.getpid()}.tmp")
    for stale in (tmp, bak_tmp):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    try:
        _write_private(tmp, serialize(data))
        if path.exists():
            _write_private(bak_tmp, path.read_bytes())
            os.replace(bak_tmp, bak)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, bak_tmp):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    _fsync_dir(path.parent)
