"""A broadcast event is encoded once and spliced with each socket's `seq`: the bytes must be those of the
whole frame encoded per socket, for any payload and with or without `stateVersion`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

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
