"""Stamps for the benches' start-up and recovery timelines, taken inside every process of our tree.

Python imports `sitecustomize` after `site`, so with this folder on PYTHONPATH and OCSB_TIMELINE naming a
file, each process of the gateway's tree (the supervisor, the fork server, every worker: the forked ones
inherit the hook, an exec'd fork server loads it again) appends one line per event to that file:
`pid ppid monotonic cpu event detail`. CLOCK_MONOTONIC is system-wide, so the bench compares the stamps with its
own; `cpu` is the process's CPU seconds so far (user + system; a forked child's count starts at its fork), which
a busy machine disturbs far less than the wall clock. The events come from the interpreter's audit hooks, so
the product is measured unchanged:

- `start`: the interpreter and `site` are up (exec -> here is interpreter start-up);
- `import <module>`: a watched module starts loading (first import only);
- `fork` / `child`: `os.fork` in the parent, and the child's first moment;
- `bind <addr>`: a listening socket is bound; `sendmsg`: a message with fds sent (our spawn request);
- `killpg <pid>`: the fork server clears a worker's process group (it does so as it reaps the worker);
- `stdout`: a process opens a file object on fd 1 (a worker, forked or a standby, taking its output pipe);
- `gc.freeze`: the fork server (or the supervisor) froze its heap: its preloading is done.

Nothing happens without OCSB_TIMELINE. The hook filters by event name first; it costs a few microseconds
per watched event and well under one per other event.
"""

import os
import sys
import time

_PATH = os.environ.get("OCSB_TIMELINE")
WATCHED_MODULES = frozenset(os.environ.get("OCSB_TIMELINE_MODULES", "").split(",")) - {""}


def _install(path: str) -> None:
    import gc

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)  # forks keep it, execs reopen

    def stamp(event: str, detail: str = "") -> None:
        try:  # noqa: SIM105 - contextlib would be one more import in every process
            os.write(fd, f"{os.getpid()} {os.getppid()} {time.monotonic():.6f} {time.process_time():.6f} {event} "
                         f"{detail}\n".encode())
        except OSError:
            pass

    def hook(event: str, args: tuple) -> None:
        if event == "import":
            if args[0] in WATCHED_MODULES:
                stamp("import", args[0])
        elif event == "os.fork":
            stamp("fork")
        elif event == "socket.bind":
            stamp("bind", str(args[1]).replace(" ", ""))
        elif event == "socket.sendmsg":
            stamp("sendmsg")
        elif event == "os.killpg":
            stamp("killpg", str(args[0]))
        elif event == "open" and args[0] == 1:
            stamp("stdout")

    freeze = gc.freeze

    def stamped_freeze() -> None:
        freeze()
        stamp("gc.freeze")

    gc.freeze = stamped_freeze
    os.register_at_fork(after_in_child=lambda: stamp("child"))
    stamp("start", " ".join(sys.argv)[:120].replace("\n", " "))
    sys.addaudithook(hook)


if _PATH:
    _install(_PATH)
