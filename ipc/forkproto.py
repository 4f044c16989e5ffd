"""Messages between the supervisor and its fork server, over a SOCK_SEQPACKET socketpair.

supervisor -> fork server
    {"op": "spawn", "seq", "name", "kind", "options", "bus", "profile", "hb_ms"}  + fd: the output pipe
    {"op": "signal", "pid", "sig"}     signal a worker's whole process group (never a reaped pid)
    {"op": "standby", "count"}         keep `count` standby processes ready for the next spawns (0: none)
    {"op": "quit"}                     SIGKILL every remaining worker group, then exit
fork server -> supervisor
    {"op": "spawned", "seq", "name", "pid"} | {"op": "spawn_failed", "seq", "name", "error"}
    {"op": "exit", "pid", "status"}    raw wait status, decoded by `describe_status`
    {"op": "standbys", "pids"}         the standby processes now waiting (none is a worker until it is spawned)
    {"op": "boot", "pid", "errors"}    the fork server is serving; kind modules that failed to import
"""

from __future__ import annotations

import os
import signal

MAX_PACKET = 1 << 20


def describe_status(status: int) -> dict[str, int | str | None]:
    """Turn a raw wait status into {code, signal, text}."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"code": None, "signal": sig, "text": f"killed by {name}"}
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return {"code": code, "signal": None, "text": f"exit code {code}"}
