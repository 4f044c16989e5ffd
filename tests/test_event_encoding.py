"""A broadcast event is encoded once and spliced with each socket's `seq`: the bytes must be those of the
whole frame encoded per socket, for any payload and with or without `stateVersion`."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from openclaw_sup.gateway import hub
from openclaw_sup.gateway.hub import encode_event

PAYLOADS = [{"ts": 1796518942403}, {"presence": [{"host": "héllo \u2028", "roles": ["operator"], "n": 2.5}]},
            None, "text", [1, {"a": None}], {"seq": 7, "type": "inner"}]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("state", [None, {"presence": 3, "health": 1}])
def test_a_spliced_event_is_the_frame_encoded_whole(payload: Any, state: dict[str, int] | None) -> None:
    head, tail = encode_event("tick", payload, state)
    for seq in (1, 9, 123456789012):
        frame: dict[str, Any] = {"type": "event", "event": "tick", "payload": payload, "seq": seq}
        if state is not None:
            frame["stateVersion"] = state
        spliced = b"%s%d%s" % (head, seq, tail)
        assert spliced == orjson.dumps(frame)
        assert orjson.loads(spliced) == frame


class Receiver:
    """What the hub needs of a client: `push_encoded` (the socket side is tested live in test_gateway_protocol)."""

    def __init__(self, log: list[str]) -> None:
        self.frames: list[bytes] = []
        self.seq = 0
        self.log = log

    def push_encoded(self, head: bytes, tail: bytes) -> bool:
        self.seq += 1
        self.frames.append(b"%s%d%s" % (head, self.seq, tail))
        self.log.append("push")
        return True


def test_a_spread_broadcast_reaches_every_client_once_and_lets_the_loop_run_between_slices() -> None:
    n = hub.SPREAD_BATCH * 3 + 7
    log: list[str] = []

    async def main() -> int:
        h = hub.Hub()
        receivers = [Receiver(log) for _ in range(n)]
        h.connections.update(receivers)  # type: ignore[arg-type]
        asyncio.get_running_loop().call_soon(log.append, "other work")
        got = await h.broadcast_spread("tick", {"ts": 1})
        assert all(len(r.frames) == 1 and orjson.loads(r.frames[0])["seq"] == 1 for r in receivers)
        return got

    assert asyncio.run(main()) == n
    other = log.index("other work")
    assert 0 < other < len(log) - 1, "other work ran between two slices, not before or after the whole broadcast"
    assert other <= hub.SPREAD_BATCH
