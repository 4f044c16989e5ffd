"""Client side of the supervisor's control socket (`<stateDir>/run/ctl.sock`).

Standard library only, so `openclaw-sup status` starts in a few tens of milliseconds: one JSON line out,
one JSON line back.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

MAX_REPLY = 16 << 20


class ControlError(Exception):
    """No supervisor answered; the message says why."""


def call(path: Path, op: str, timeout: float = 5.0, **args: object) -> dict[str, object]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no gateway is running for this profile (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise ControlError(f"no gateway is running for this profile (stale control socket at {path})") \
                from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as the gateway's user") from None
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        chunks = []
        size = 0
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if data.endswith(b"\n") or size > MAX_REPLY:
                break
    except TimeoutError:
        raise ControlError(f"the gateway did not answer within {timeout:g}s on {path}") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the gateway on {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not chunks:
        raise ControlError(f"the gateway closed {path} without answering")
    reply = json.loads(b"".join(chunks))
    if not reply.get("ok", False):
        raise ControlError(str(reply.get("error", "request failed")))
    return reply
