"""Unmasking client frames with the standard library alone: both paths (big integer for small frames, byte
lanes through translate for larger ones) give RFC 6455's XOR for every length and lane alignment."""

from __future__ import annotations

import os
import random

from openclaw_sup.gateway import wsframe


def reference(mask: bytes, payload: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_unmask_matches_the_rfc_xor_on_both_sides_of_the_small_frame_bound() -> None:
    rng = random.Random(6455)
    sizes = [0, 1, 2, 3, 4, 5, 125, 126, 65535, 65536, 70001]
    sizes += [wsframe.SMALL_FRAME + d for d in range(-4, 5)]
    for n in sizes:
        mask, payload = os.urandom(4), rng.randbytes(n)
        assert wsframe.unmask(mask, bytearray(payload)) == reference(mask, payload), n


def test_a_large_masked_frame_parses_to_its_payload() -> None:
    payload = os.urandom(300_000)
    mask = os.urandom(4)
    frame = bytearray(struct_head(len(payload)) + mask + reference(mask, payload))
    assert wsframe.next_frame(frame, 1 << 20) == (True, wsframe.OP_BINARY, payload, len(frame))


def struct_head(n: int) -> bytes:
    return bytes((0x80 | wsframe.OP_BINARY, 0x80 | 127)) + n.to_bytes(8, "big")
