"""Running one job's payload: a command in its own process group, or an agent turn over the bus.

A command runs as its own session (so its whole process group can be killed) with PR_SET_PDEATHSIG=SIGKILL
(so it dies with the scheduler); on timeout or cancellation the group gets SIGKILL. stdout and stderr are read
as they come and only the last 32 KiB of each is kept. After a scheduler crash, `sweep_group` kills what was
left of a group recorded in the store, provided the group is still the one that run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import field
from typing import Any

from openclaw_sup.config.record import record
from openclaw_sup.workers.procgroup import Tail, die_with_parent, kill_group
from openclaw_sup.workers.runtime import RequestError, WorkerContext
from openclaw_sup.workers.scheduler.jobs import DEFAULT_COMMAND_TIMEOUT_S

SUMMARY_CHARS = 2000
AGENT_DEFAULT_TIMEOUT_S = 3600
AGENT_GRACE_S = 10.0
DRAIN_S = 1.0


@record
class Outcome:
    status: str
    summary: str | None = None
    error: str | None = None
    reason: str | None = None
    permanent: bool = False
    details: dict[str, Any] = field(default_factory=dict)


async def _pump(stream: asyncio.StreamReader | None, tail: Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        tail.feed(chunk)


def _summary(stdout: Tail, stderr: Tail) -> str:
    text = stdout.text().strip() or stderr.text().strip()
    return text[-SUMMARY_CHARS:]


async def run_command(payload: dict[str, Any], on_spawn: Callable[[int], None]) -> Outcome:
    argv = list(payload["argv"])
    timeout = float(payload.get("timeoutSeconds") or DEFAULT_COMMAND_TIMEOUT_S)
    env = {**os.environ, **(payload.get("env") or {})}
    data = payload.get("input")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=payload.get("cwd"), env=env, start_new_session=True, preexec_fn=die_with_parent,
            stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return Outcome("error", error=f"cannot start {argv[0]!r}: {exc.strerror or exc}", permanent=True)
    on_spawn(proc.pid)
    out, err = Tail(), Tail()
    pumps = [asyncio.ensure_future(_pump(proc.stdout, out)), asyncio.ensure_future(_pump(proc.stderr, err))]
    timed_out = False

    async def feed_and_wait() -> None:
        if data is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(data.encode())
                await proc.stdin.drain()
            proc.stdin.close()
        await proc.wait()

    try:
        try:
            await asyncio.wait_for(feed_and_wait(), timeout)
        except TimeoutError:
            timed_out = True
            kill_group(proc.pid)
            await proc.wait()
    except asyncio.CancelledError:
        kill_group(proc.pid)
        raise
    finally:
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), DRAIN_S)
        for p in pumps:
            p.cancel()
    details: dict[str, Any] = {"exitCode": proc.returncode, "stdout": out.text(), "stderr": err.text()}
    if out.truncated or err.truncated:
        details["outputTruncatedBytes"] = {"stdout": out.truncated, "stderr": err.truncated}
    if timed_out:
        return Outcome("error", summary=_summary(out, err) or None, details=details,
                       error=f"command timed out after {timeout:g}s; its process group was killed")
    if proc.returncode != 0:
        code = proc.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        last = (err.text().strip() or out.text().strip()).splitlines()[-1:] or [""]
        return Outcome("error", summary=_summary(out, err) or None, details=details,
                       error=f"command {how}" + (f": {last[0][:500]}" if last[0] else ""))
    return Outcome("ok", summary=_summary(out, err) or None, details=details)


async def run_agent_turn(ctx: WorkerContext, params: dict[str, Any], timeout_s: float,
                         request: Callable[..., Awaitable[Any]] | None = None) -> Outcome:
    """One `agent.turn` on the agent worker; its absence or silence is an error naming the cause."""
    ask = request or ctx.request
    try:
        answer = await ask("agent.turn", params, to="agent", timeout=timeout_s + AGENT_GRACE_S)
    except RequestError as exc:
        return Outcome("error", error=f"agent.turn failed: {exc.code}: {exc}")
    except TimeoutError:
        return Outcome("error", error=f"agent.turn: no answer from the agent worker within {timeout_s:g}s")
    if not isinstance(answer, dict) or answer.get("status") not in ("ok", "error", "skipped"):
        return Outcome("error", error=f"agent.turn: unexpected answer {str(answer)[:200]}")
    details = {k: answer[k] for k in ("model", "usage", "route", "sessionKey") if answer.get(k) is not None}
    summary = answer.get("summary")
    return Outcome(str(answer["status"]), summary=str(summary) if summary is not None else None,
                   error=answer.get("error") or (None if answer["status"] != "error" else "agent turn failed"),
                   reason=answer.get("reason"), details=details)
