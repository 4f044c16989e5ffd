"""The commands a node host answers: `system.which`, `system.run.prepare`, `system.run` and
`system.execApprovals.get|set`, each gated by this host's own approvals document.

`system.run` is where approvals are enforced on a node: the host document decides (deny, allowlist, ask),
and only a gateway-verified operator approval (`approved` with its `runId`) lets an `ask` command through.
An `allow-always` decision is remembered here, as allowlist entries bound to the exact argv and directory.
Commands run under workers/boundedrun.py: own process group, deadline, output ceiling.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openclaw_sup.config import exec_approvals, exec_policy
from openclaw_sup.workers.boundedrun import MAX_OUTPUT_BYTES, run_bounded
from openclaw_sup.workers.groupledger import GroupLedger

COMMANDS = ("system.run", "system.run.prepare", "system.which", "system.execApprovals.get",
            "system.execApprovals.set")
DEFAULT_RUN_TIMEOUT_S = 30 * 60
SHELLS = {"sh", "bash", "zsh", "dash", "ash", "ksh"}


class CommandError(Exception):
    """A refusal the gateway relays to the caller as `<code>: <message>`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def inner_command(argv: list[str]) -> str:
    """The command line a run executes: the script of `sh -c|-lc <script>`, else the argv itself."""
    if len(argv) == 3 and os.path.basename(argv[0]) in SHELLS and argv[1] in ("-c", "-lc"):
        return argv[2]
    return " ".join(_quote(a) for a in argv)


def _quote(arg: str) -> str:
    if arg and not any(c in arg for c in " \t\n\"'\\$`;&|<>()*?[]{}~#"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`") + '"'


def _argv(params: dict[str, Any]) -> list[str]:
    argv = params.get("command")
    if isinstance(argv, str) and argv.strip():
        return ["/bin/sh", "-lc", argv]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise CommandError("INVALID_REQUEST", "command must be a non-empty array of strings")
    return list(argv)


class NodeCommands:
    def __init__(self, state_dir: Path, emit: Callable[[str, dict[str, Any]], Awaitable[None]],
                 ledger: GroupLedger | None = None) -> None:
        self.approvals = exec_approvals.ApprovalsStore(state_dir)
        self.ledger = ledger
        self.emit = emit
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "system.which": self.which, "system.run.prepare": self.prepare, "system.run": self.run,
            "system.execApprovals.get": self.approvals_get, "system.execApprovals.set": self.approvals_set,
        }

    def close(self) -> None:
        self.approvals.close()

    async def handle(self, command: str, params: Any) -> Any:
        handler = self.handlers.get(command)
        if handler is None:
            raise CommandError("UNAVAILABLE", f"command {command!r} is not supported by this node host")
        return await handler(params if isinstance(params, dict) else {})

    async def which(self, params: dict[str, Any]) -> dict[str, Any]:
        bins = params.get("bins")
        if not isinstance(bins, list):
            raise CommandError("INVALID_REQUEST", "bins must be an array of command names")
        found = {b: shutil.which(b) for b in bins if isinstance(b, str) and b}
        return {"bins": {b: p for b, p in found.items() if p}}

    def _cwd(self, params: dict[str, Any]) -> str:
        cwd = params.get("cwd")
        if isinstance(cwd, str) and cwd.strip():
            if not os.path.isdir(cwd):
                raise CommandError("INVALID_REQUEST", f"working directory {cwd!r} does not exist on this node")
            return cwd
        return os.getcwd()

    async def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        argv, cwd = _argv(params), self._cwd(params)
        doc = self.approvals.ensure().file
        host = exec_policy.host_policy(doc, params.get("agentId"))
        text = inner_command(argv)
        analysis = exec_policy.analyse(text, cwd)
        patterns = [{"pattern": s.resolved, "argPattern": exec_policy.argv_hash(cwd, s.argv)}
                    for s in analysis.segments if s.resolved]
        plan = {"argv": argv, "cwd": cwd, "commandText": " ".join(_quote(a) for a in argv), "commandPreview": text,
                "agentId": params.get("agentId"), "sessionKey": params.get("sessionKey"),
                "policySnapshot": {"security": host.security, "ask": host.ask, "askFallback": host.ask_fallback,
                                   "autoAllowSkills": bool((doc.get("defaults") or {}).get("autoAllowSkills")),
                                   "allowlistRules": []}}
        return {"plan": {k: v for k, v in plan.items() if v is not None},
                "execPolicy": {"security": host.security, "ask": host.ask},
                "allowAlwaysCoverage": {"complete": analysis.ok and len(patterns) == len(analysis.segments),
                                        "patterns": patterns}}

    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        argv, cwd = _argv(params), self._cwd(params)
        plan = params.get("systemRunPlan")
        if isinstance(plan, dict) and (plan.get("argv") != argv or (plan.get("cwd") and plan.get("cwd") != cwd)):
            raise CommandError("SYSTEM_RUN_DENIED", "SYSTEM_RUN_DENIED: approval does not match this command")
        agent_id = params.get("agentId") if isinstance(params.get("agentId"), str) else None
        text = inner_command(argv)
        decision_kind = params.get("approvalDecision")
        approved = params.get("approved") is True and decision_kind in ("allow-once", "allow-always")
        doc = self.approvals.ensure().file
        decision = exec_policy.decide(doc, agent_id, text, cwd=cwd, approved=approved)
        base = {"sessionKey": params.get("sessionKey"), "runId": params.get("runId"), "host": "node",
                "command": " ".join(_quote(a) for a in argv)}
        if not decision.allowed:
            await self.emit("exec.denied", {**base, "reason": decision.message})
            code = "SYSTEM_RUN_DISABLED" if decision.security == "deny" else "SYSTEM_RUN_DENIED"
            raise CommandError(code, decision.message or "SYSTEM_RUN_DENIED")
        if approved and decision_kind == "allow-always" and decision.ask != "always":
            self.approvals.update(lambda d: exec_policy.allow_always(d, agent_id, decision.analysis, cwd))
        elif decision.matched:
            self.approvals.update(lambda d: exec_policy.note_use(d, decision.matched, text))
        env = {**os.environ, **{k: v for k, v in (params.get("env") or {}).items()
                                if isinstance(k, str) and isinstance(v, str)}}
        timeout_ms = params.get("timeoutMs")
        timeout_s = timeout_ms / 1000 if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 \
            else DEFAULT_RUN_TIMEOUT_S
        res = await run_bounded(argv, cwd=cwd, env=env, timeout_s=timeout_s, ledger=self.ledger)
        error = res.describe(timeout_s, MAX_OUTPUT_BYTES)
        out = {"exitCode": res.exit_code, "timedOut": res.timed_out, "success": res.success, "stdout": res.stdout,
               "stderr": res.stderr, "error": error if not res.success and error else None}
        if res.output_capped:
            out["outputCapped"] = True
        await self.emit("exec.finished", {**base, "exitCode": res.exit_code, "timedOut": res.timed_out,
                                          "success": res.success, "output": (res.stdout or res.stderr)[-2000:].strip(),
                                          "suppressNotifyOnExit": False})
        return out

    async def approvals_get(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.approvals.ensure().payload()

    async def approvals_set(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.approvals.replace(params.get("file"), params.get("baseHash")).payload()
        except exec_approvals.ApprovalsError as exc:
            raise CommandError("INVALID_REQUEST", str(exc)) from None
