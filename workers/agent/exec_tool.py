"""The agent's `exec` tool: a shell command on the gateway host or on a paired node, only as approvals allow.

`host=gateway` (and `auto`, there is no sandbox here) runs the command under the agent worker in its own process
group, with a deadline and an output ceiling (workers/boundedrun.py); the gateway host's approvals document
(`<stateDir>/state/openclaw.sqlite#exec_approvals_config`) decides, stricter of it and `tools.exec`.
`host=node` sends `system.run` through the gateway to the chosen node (`node`, `tools.exec.node`, or the only
connected node that runs commands); the node's own approvals decide. When the decision is "approval required"
the tool files an approval request with the gateway (`openclaw approvals pending` lists it), waits for
allow-once / allow-always / deny or the expiry (then `askFallback`), and runs or refuses accordingly. A denial
comes back to the model as the tool's error, with upstream's text (`SYSTEM_RUN_DENIED: approval required`,
`SYSTEM_RUN_DENIED: allowlist miss`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import field
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config import exec_approvals, exec_policy, statedb
from openclaw_sup.config.record import record
from openclaw_sup.workers.agent.providers import ToolCall
from openclaw_sup.workers.boundedrun import MAX_OUTPUT_BYTES, default_cwd, run_bounded, shell_argv
from openclaw_sup.workers.groupledger import GroupLedger
from openclaw_sup.workers.runtime import RequestError

SPEC = {
    "name": "exec",
    "description": "Run a shell command now and return its output. host=gateway runs it on the gateway host, "
                   "host=node on a paired node (node: its id or name). Commands run only as the host's exec "
                   "approvals allow; one that needs an operator's approval waits for it.",
    "parameters": {
        "type": "object", "required": ["command"],
        "properties": {
            "command": {"type": "string", "description": "Shell command."},
            "workdir": {"type": "string", "description": "Working directory; omit for the default."},
            "env": {"type": "object", "patternProperties": {"^.*$": {"type": "string"}},
                    "description": "Literal environment overrides."},
            "timeoutSeconds": {"type": "number", "description": "Process lifetime in seconds."},
            "host": {"enum": ["auto", "gateway", "node"], "type": "string",
                     "description": "Omit/auto: the configured host (tools.exec.host, else gateway)."},
            "node": {"type": "string", "description": "Node id or name for host=node."},
            "ask": {"type": "string", "description": "Ask for stricter approvals: on-miss or always."},
            "title": {"type": "string", "maxLength": 120, "description": "Short purpose of the call."},
        },
    },
}
DEFAULT_TIMEOUT_S = 1800.0
APPROVAL_TIMEOUT_MS = 120_000
OUTPUT_CHARS = 64_000
MODES = {  # tools.exec.mode -> (security, ask)
    "deny": ("deny", "off"), "allowlist": ("allowlist", "off"), "ask": ("allowlist", "on-miss"),
    "auto": ("allowlist", "on-miss"), "full": ("full", "off"),
}
Request = Callable[..., Awaitable[Any]]
Update = Callable[[dict[str, Any]], None]


@record
class ToolResult:
    text: str
    is_error: bool
    details: dict[str, Any] = field(default_factory=dict)


class ExecDenied(Exception):
    """The command must not run; the message is what the model (and the operator) read."""


def error_result(message: str, **details: Any) -> ToolResult:
    """Upstream's error shape: the JSON `{status, tool, error}` as the tool's text."""
    body = {"status": "error", "tool": "exec", "error": message}
    return ToolResult(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode(), True, {**body, **details})


def requested_policy(exec_cfg: dict[str, Any], call_ask: Any) -> tuple[str, str]:
    """`tools.exec` (mode, or legacy security/ask) and the call's `ask`, which may only harden."""
    mode = exec_cfg.get("mode")
    security, ask = MODES.get(mode, (exec_cfg.get("security") or "full", exec_cfg.get("ask") or "off")) \
        if isinstance(mode, str) else (exec_cfg.get("security") or "full", exec_cfg.get("ask") or "off")
    security = security if security in exec_approvals.SECURITY else "full"
    ask = ask if ask in exec_approvals.ASK else "off"
    if call_ask in exec_approvals.ASK:
        ask = exec_policy.stricter_ask(ask, call_ask)
    return security, ask


class ExecTool:
    """One run's exec tool: what it needs to know about the run, and how to reach the gateway."""

    spec = SPEC

    def __init__(self, *, state_dir: Path, exec_cfg: dict[str, Any], agent_id: str, session_key: str, run_id: str,
                 request: Request, log: Any, ledger: GroupLedger | None = None) -> None:
        self.state_dir = state_dir
        self.ledger = ledger
        self.exec_cfg = exec_cfg
        self.agent_id, self.session_key, self.run_id = agent_id, session_key, run_id
        self.request = request
        self.log = log

    async def run(self, call: ToolCall, deadline: float, update: Update) -> ToolResult:
        args = call.arguments
        command = args.get("command")
        if call.raw_arguments:
            return error_result(f"exec arguments are not a JSON object: {call.raw_arguments[:200]}")
        if not isinstance(command, str) or not command.strip():
            return error_result("exec needs a non-empty `command` string")
        host = args.get("host") if args.get("host") in ("gateway", "node") else self.exec_cfg.get("host")
        host = "node" if host == "node" else "gateway"
        security, ask = requested_policy(self.exec_cfg, args.get("ask"))
        timeout_s = args.get("timeoutSeconds")
        timeout_s = float(timeout_s) if isinstance(timeout_s, (int, float)) and timeout_s > 0 else DEFAULT_TIMEOUT_S
        timeout_s = min(timeout_s, max(1.0, deadline - time.monotonic()))
        env = {k: v for k, v in (args.get("env") or {}).items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(args.get("env"), dict) else {}
        workdir = args.get("workdir") if isinstance(args.get("workdir"), str) and args["workdir"].strip() else None
        try:
            if security == "deny":
                raise ExecDenied(exec_policy.SECURITY_DENY)
            if host == "node":
                return await self._on_node(call, command, workdir, env, timeout_s, ask, deadline, update)
            return await self._on_gateway(call, command, workdir, env, timeout_s, security, ask, deadline, update)
        except ExecDenied as exc:
            return error_result(str(exc), host=host)
        except statedb.StateDbError as exc:  # the gateway host's approvals cannot be read: nothing runs
            return error_result(f"exec approvals unavailable on the gateway host: {exc}", host=host)

    # -- approvals -----------------------------------------------------------------------------------

    async def _approval(self, call: ToolCall, request: dict[str, Any], deadline: float, update: Update
                        ) -> tuple[str | None, str]:
        """File an approval request and wait for its decision (None: expired or cancelled)."""
        left_ms = int(max(1.0, deadline - time.monotonic()) * 1000)
        params = {"id": str(uuid.uuid4()), "agentId": self.agent_id, "sessionKey": self.session_key,
                  "runId": self.run_id, "toolCallId": call.id, "timeoutMs": min(APPROVAL_TIMEOUT_MS, left_ms),
                  **request}
        filed = await self.request("exec.approval.request", params, to="gateway", timeout=30)
        approval_id = str(filed["id"])
        update({"status": "waiting-approval", "approvalId": approval_id, "error": exec_policy.APPROVAL_REQUIRED,
                "expiresAtMs": filed.get("expiresAtMs")})
        self.log.info("exec %s waits for approval %s (openclaw approvals resolve %s allow-once)", call.id,
                      approval_id, approval_id)
        wait_s = max(1.0, (int(filed.get("expiresAtMs") or 0) - int(time.time() * 1000)) / 1000) + 5
        try:
            decided = await self.request("exec.approval.waitDecision", {"id": approval_id}, to="gateway",
                                         timeout=wait_s)
        except TimeoutError:
            return None, approval_id
        decision = decided.get("decision") if isinstance(decided, dict) else None
        update({"status": "approval-resolved", "approvalId": approval_id, "decision": decision})
        return decision, approval_id

    # -- gateway host --------------------------------------------------------------------------------

    async def _on_gateway(self, call: ToolCall, command: str, workdir: str | None, env: dict[str, str],
                          timeout_s: float, security: str, ask: str, deadline: float, update: Update) -> ToolResult:
        cwd = workdir or default_cwd()
        if not os.path.isdir(cwd):
            return error_result(f"working directory {cwd!r} does not exist on the gateway host", host="gateway")
        with exec_approvals.ApprovalsStore(self.state_dir) as store:
            doc = store.ensure().file
        decision = exec_policy.decide(doc, self.agent_id, command, cwd=cwd, requested_security=security,
                                      requested_ask=ask)
        approval_id = None
        if not decision.allowed and not decision.needs_approval:
            raise ExecDenied(decision.message or exec_policy.ALLOWLIST_MISS)
        if decision.needs_approval:
            verdict, approval_id = await self._approval(call, {
                "host": "gateway", "command": command, "commandArgv": shell_argv(command), "cwd": cwd,
                "security": decision.security, "ask": decision.ask}, deadline, update)
            if verdict == "deny":
                raise ExecDenied(f"{exec_policy.APPROVAL_REQUIRED} (denied by the operator, approval {approval_id})")
            if verdict is None:
                decision = exec_policy.fallback(decision)
                if not decision.allowed:
                    raise ExecDenied(f"{exec_policy.APPROVAL_REQUIRED} (no decision before approval {approval_id} "
                                     "expired; askFallback denied it)")
            elif verdict == "allow-always" and decision.ask != "always":
                with exec_approvals.ApprovalsStore(self.state_dir) as store:
                    store.update(lambda d: exec_policy.allow_always(d, self.agent_id, decision.analysis, cwd))
        elif decision.matched:
            with exec_approvals.ApprovalsStore(self.state_dir) as store:
                store.update(lambda d: exec_policy.note_use(d, decision.matched, command))
        res = await run_bounded(shell_argv(command), cwd=cwd, env={**os.environ, **env}, timeout_s=timeout_s,
                                ledger=self.ledger)
        problem = res.describe(timeout_s, MAX_OUTPUT_BYTES)
        details = {"status": "completed" if res.success else "failed", "exitCode": res.exit_code,
                   "durationMs": res.duration_ms, "host": "gateway", "cwd": cwd, "timedOut": res.timed_out,
                   "outputCapped": res.output_capped, **({"approvalId": approval_id} if approval_id else {})}
        return ToolResult(output_text(res.stdout, res.stderr, problem), not res.success, details)

    # -- node host -----------------------------------------------------------------------------------

    async def _node_id(self, wanted: Any) -> str:
        ref = wanted if isinstance(wanted, str) and wanted.strip() else self.exec_cfg.get("node")
        listed = await self.request("node.list", {}, to="gateway", timeout=10)
        nodes = [n for n in listed.get("nodes") or () if n.get("connected") and "system.run" in (n.get("commands")
                                                                                                 or ())]
        if isinstance(ref, str) and ref.strip():
            ref = ref.strip()
            for n in listed.get("nodes") or ():
                if ref in (n.get("nodeId"), n.get("displayName")) or (len(ref) >= 6 and
                                                                      str(n.get("nodeId", "")).startswith(ref)):
                    if not n.get("connected"):
                        raise ExecDenied(f"node {ref!r} is not connected")
                    if "system.run" not in (n.get("commands") or ()):
                        raise ExecDenied(f"node {ref!r} cannot run commands (system.run is not in its approved "
                                         "command surface; see openclaw nodes pending)")
                    return str(n["nodeId"])
            raise ExecDenied(f"unknown node {ref!r} (see openclaw nodes status)")
        if len(nodes) == 1:
            return str(nodes[0]["nodeId"])
        if not nodes:
            raise ExecDenied("no connected node can run commands (pair one with openclaw node run, approve it with "
                             "openclaw nodes approve)")
        raise ExecDenied(f"{len(nodes)} nodes can run commands; say which with node=<id or name> or set "
                         "tools.exec.node")

    async def _invoke(self, node_id: str, command: str, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        return await self.request("node.invoke", {"nodeId": node_id, "command": command, "params": params,
                                                  "timeoutMs": int(timeout_s * 1000) + 5000,
                                                  "idempotencyKey": str(uuid.uuid4())},
                                  to="gateway", timeout=timeout_s + 15)

    async def _on_node(self, call: ToolCall, command: str, workdir: str | None, env: dict[str, str],
                       timeout_s: float, ask: str, deadline: float, update: Update) -> ToolResult:
        node_id = await self._node_id(call.arguments.get("node"))
        argv = shell_argv(command)
        base = {"command": argv, "rawCommand": command, "agentId": self.agent_id, "sessionKey": self.session_key,
                **({"cwd": workdir} if workdir else {})}
        prepared = (await self._invoke(node_id, "system.run.prepare", base, 30))["payload"]
        plan = prepared.get("plan") or {}
        run = {**base, "cwd": plan.get("cwd") or workdir, "env": env or None, "timeoutMs": int(timeout_s * 1000)}
        run = {k: v for k, v in run.items() if v is not None}
        approval_id = None
        if ask != "always":
            try:
                return self._node_result(await self._invoke(node_id, "system.run", run, timeout_s), node_id, None)
            except RequestError as exc:
                if exec_policy.APPROVAL_REQUIRED not in str(exc):
                    raise ExecDenied(node_denial(str(exc))) from None
                update({"status": "denied", "error": exec_policy.APPROVAL_REQUIRED, "nodeId": node_id})
        verdict, approval_id = await self._approval(call, {
            "host": "node", "nodeId": node_id, "command": command, "commandArgv": argv, "systemRunPlan": plan,
            "cwd": plan.get("cwd"), "security": (prepared.get("execPolicy") or {}).get("security"),
            "ask": exec_policy.stricter_ask(ask, (prepared.get("execPolicy") or {}).get("ask") or "off")},
            deadline, update)
        if verdict not in ("allow-once", "allow-always"):
            why = "denied by the operator" if verdict == "deny" else "no decision before it expired"
            raise ExecDenied(f"{exec_policy.APPROVAL_REQUIRED} ({why}, approval {approval_id})")
        approved = {**run, "approved": True, "approvalDecision": verdict, "runId": approval_id,
                    "systemRunPlan": plan}
        try:
            res = await self._invoke(node_id, "system.run", approved, timeout_s)
        except RequestError as exc:
            raise ExecDenied(node_denial(str(exc))) from None
        return self._node_result(res, node_id, approval_id)

    @staticmethod
    def _node_result(res: dict[str, Any], node_id: str, approval_id: str | None) -> ToolResult:
        out = res.get("payload") or {}
        ok = bool(out.get("success"))
        details = {"status": "completed" if ok else "failed", "exitCode": out.get("exitCode"), "host": "node",
                   "nodeId": node_id, "timedOut": bool(out.get("timedOut")),
                   **({"approvalId": approval_id} if approval_id else {})}
        return ToolResult(output_text(str(out.get("stdout") or ""), str(out.get("stderr") or ""),
                                      None if ok else out.get("error") or f"exit code {out.get('exitCode')}"),
                          not ok, details)


def node_denial(message: str) -> str:
    """A node's refusal as the model reads it: `SYSTEM_RUN_DENIED: ...` without the gateway's code prefix."""
    for marker in ("SYSTEM_RUN_DENIED: ", "SYSTEM_RUN_DISABLED: "):
        at = message.rfind(marker)
        if at >= 0:
            return message[at:]
    return message


def output_text(stdout: str, stderr: str, problem: str | None) -> str:
    text = stdout
    if stderr.strip():
        text += ("" if not text or text.endswith("\n") else "\n") + f"[stderr]\n{stderr}"
    if problem:
        text += ("" if not text or text.endswith("\n") else "\n") + f"[{problem}]"
    if len(text) > OUTPUT_CHARS:
        text = f"[output truncated to the last {OUTPUT_CHARS} characters]\n" + text[-OUTPUT_CHARS:]
    return text or "(no output)"
