"""The bus envelope: one orjson map per message, with a `kind` field.

Kinds (DESIGN.md, "IPC"): `hello`, `ready`, `hb` (heartbeat with stats), `req`/`res` (correlated by `id`),
`event`, `log`, `stop`, `cancel`, `listeners`. Decoding validates only what routing needs; a bad message raises
`EnvelopeError` naming what was wrong, and the receiver drops it with a log line.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson

MAX_MESSAGE_BYTES = 1 << 20


class Kind(StrEnum):
    HELLO = "hello"
    READY = "ready"
    HB = "hb"
    REQ = "req"
    RES = "res"
    EVENT = "event"
    LOG = "log"
    STOP = "stop"
    CANCEL = "cancel"  # the requester gave up on request `id`: the worker stops working on it, answers nothing
    LISTENERS = "listeners"  # supervisor -> worker, `on`: whether any client receives worker events now


KINDS = frozenset(k.value for k in Kind)


class EnvelopeError(ValueError):
    """A message that cannot be routed: not JSON, not a map, no known kind, or too large."""


def encode(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg)


def decode(data: bytes, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    if len(data) > limit:
        raise EnvelopeError(f"message of {len(data)} bytes exceeds the {limit}-byte limit")
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"message is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise EnvelopeError(f"message is a JSON {type(msg).__name__}, expected a map with a 'kind' field")
    kind = msg.get("kind")
    if kind not in KINDS:
        raise EnvelopeError(f"message kind {kind!r} is not one of {', '.join(sorted(KINDS))}")
    return msg


def request_id(sender: str, pid: int, n: int) -> str:
    """A worker's request id: its name, pid and count, so that a previous incarnation's late answer never matches
    and the supervisor can tell which incarnation asked (`sender_pid`)."""
    return f"{sender}:{pid}:{n}"


def sender_pid(msg: dict[str, Any]) -> int | None:
    """The pid of the worker process that sent `msg`: hello, ready and hb carry it, a request names it in its id."""
    pid = msg.get("pid")
    if isinstance(pid, int):
        return pid
    if msg.get("kind") == Kind.REQ:
        parts = str(msg.get("id")).rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            return int(parts[1])
    return None
