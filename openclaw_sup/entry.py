"""The `openclaw-sup` entry point: routes a command to its module before importing anything heavy.

`status` answers from the standard library alone; `gateway` (no sub-command) runs the supervisor; every
other command goes to the typer app in cli/.
"""

from __future__ import annotations

import sys

GATEWAY_SUBCOMMANDS = {"status", "call", "install", "uninstall", "start", "stop", "restart", "health"}


def _split_globals(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull upstream's global `--dev` / `--profile NAME` from before the command."""
    globals_: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--dev":
            globals_.append("--dev")
            i += 1
        elif argv[i] == "--profile" and i + 1 < len(argv):
            globals_ += argv[i:i + 2]
            i += 2
        elif argv[i].startswith("--profile="):
            globals_.append(argv[i])
            i += 1
        else:
            break
    return globals_, argv[i:]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    globals_, rest = _split_globals(argv)
    command = rest[0] if rest else None
    if command == "status":
        from openclaw_sup.cli.status import main as status_main

        sys.exit(status_main(globals_ + rest[1:]))
    if command == "node" and rest[1:2] == ["status"]:
        from openclaw_sup.cli.status import main as status_main

        sys.exit(status_main([*globals_, "--node", *rest[2:]]))
    if command == "node" and rest[1:2] in (["run"], ["identity"]):
        from openclaw_sup.supervisor.node_main import run as node_run

        sys.exit(node_run(globals_ + rest[1:]))
    if command == "gateway" and (len(rest) == 1 or rest[1] not in GATEWAY_SUBCOMMANDS):
        import gc

        gc.disable()  # the start-up's imports make no cycles worth a collection; the supervisor enables it once serving
        from openclaw_sup.supervisor.main import run

        sys.exit(run(globals_ + rest[1:]))
    from openclaw_sup.cli.app import app

    app(args=argv, prog_name="openclaw-sup")
