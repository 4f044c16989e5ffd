"""One shell-grade command under hard bounds: its own process group, a deadline, and an output ceiling.

The command runs as its own session with PR_SET_PDEATHSIG=SIGKILL (it dies with the worker that started it);
at the deadline, on cancellation, or once it has written more than `max_output_bytes` in all, its whole
process group gets SIGKILL. Only the last `keep_bytes` of each stream are kept, so a command that never exits
or prints a gigabyte costs a bounded time and a bounded amount of memory, never a hung or bloated worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from openclaw_sup.config.record import record

if TYPE_CHECKING:
    from openclaw_sup.workers.groupledger import GroupLedger

KEEP_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
DRAIN_S = 1.0


@record(frozen=True)
class RunResult:
    exit_code: int | None
    timed_out: bool
    output_capped: bool
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    duration_ms: int
    spawn_error: str | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_capped and not self.spawn_error

    def describe(self, timeout_s: float, max_output_bytes: int) -> str | None:
        """Why the run did not succeed, in one line, or None."""
        if self.spawn_error:
            return self.spawn_error
        if self.timed_out:
            return f"command timed out after {timeout_s:g}s; its process group was killed"
        if self.output_capped:
            return (f"command output exceeded {max_output_bytes} bytes; its process group was killed "
                    f"(kept the last {KEEP_BYTES} bytes of each stream)")
        if self.exit_code is not None and self.exit_code < 0:
            return f"command was killed by signal {-self.exit_code}"
        if self.exit_code:
            return f"command exited with code {self.exit_code}"
        return None


async def run_bounded(argv: list[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
                      timeout_s: float, max_output_bytes: int = MAX_OUTPUT_BYTES, keep_bytes: int = KEEP_BYTES,
                      on_spawn: Callable[[int], None] | None = None, ledger: GroupLedger | None = None
                      ) -> RunResult:
    """Run `argv`; with a `ledger`, its process group is listed there while it runs (swept after a crash)."""
    from openclaw_sup.workers.procgroup import Tail, die_with_parent, kill_group  # psutil: not in the fork server

    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd or None, env=dict(env) if env is not None else None, start_new_session=True,
            preexec_fn=die_with_parent, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return RunResult(None, False, False, "", "", 0, 0, 0,
                         spawn_error=f"cannot start {argv[0]!r}: {exc.strerror or exc}")
    if on_spawn is not None:
        on_spawn(proc.pid)
    if ledger is not None:
        ledger.add(proc.pid)
    out, err = Tail(keep_bytes), Tail(keep_bytes)
    capped = asyncio.Event()

    async def pump(stream: asyncio.StreamReader | None, tail: Tail) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            tail.feed(chunk)
            if out.total + err.total > max_output_bytes and not capped.is_set():
                capped.set()
                kill_group(proc.pid)

    pumps = [asyncio.ensure_future(pump(proc.stdout, out)), asyncio.ensure_future(pump(proc.stderr, err))]
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            timed_out = True
            kill_group(proc.pid)
            await proc.wait()
    finally:
        kill_group(proc.pid)  # whatever the leader left running in its group goes too
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), DRAIN_S)
        for p in pumps:
            p.cancel()
        if ledger is not None:
            ledger.remove(proc.pid)
    return RunResult(proc.returncode, timed_out, capped.is_set(), out.text(), err.text(), out.total, err.total,
                     int((time.monotonic() - t0) * 1000))


def shell_argv(command: str) -> list[str]:
    """How a command line is run on a POSIX host (upstream's node plan uses the same wrapper)."""
    return ["/bin/sh", "-lc", command]


def default_cwd() -> str:
    return os.environ.get("HOME") or os.getcwd()
