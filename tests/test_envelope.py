"""The bus envelope codec rejects what cannot be routed, with a reason."""

from __future__ import annotations

import pytest

from openclaw_sup.ipc.envelope import EnvelopeError, Kind, decode, encode, request_id, sender_pid


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


def test_sender_pid_from_lifecycle_fields_and_request_ids() -> None:
    """A worker's name may hold colons (channel workers): the pid is read from the right of a request id."""
    rid = request_id("channel:telegram:default", 4321, 7)
    assert sender_pid({"kind": "req", "id": rid}) == 4321
    assert sender_pid({"kind": "ready", "pid": 99}) == 99
    assert sender_pid({"kind": "req", "id": "gw:12"}) is None
    assert sender_pid({"kind": "res", "id": rid}) is None
