"""The bus envelope codec rejects what cannot be routed, with a reason."""

from __future__ import annotations

import pytest

from openclaw_sup.ipc.envelope import EnvelopeError, Kind, decode, encode


def test_round_trip() -> None:
    msg = {"kind": "req", "id": "a:1", "method": "echo", "params": {"x": [1, 2]}}
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"nope", "not JSON"), (b"[1]", "JSON list"), (b'{"k":1}', "kind None"),
     (b'{"kind":"bogus"}', "'bogus' is not one of"), (b'{"kind":"hb","x":"' + b"a" * 100 + b'"}', "exceeds")],
)
def test_bad_messages_name_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(raw, limit=64)


def test_every_kind_is_accepted() -> None:
    for k in Kind:
        assert decode(encode({"kind": k.value}))["kind"] == k
