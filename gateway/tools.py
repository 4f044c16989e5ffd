"""`POST /tools/invoke`: run one gateway tool over HTTP (always on; bearer auth; body at most 2 MB).

Body `{tool|name, action?, args?, sessionKey?, agentId?, idempotencyKey?, dryRun?}`. Answers `200 {ok: true,
result}` or `{ok: false, error: {type, message}}` with 400 (bad request / bad arguments), 404 (`Tool not
available: <name>`: unknown, or denied for HTTP) and 500 (the tool failed). As upstream, HTTP callers never get
the dangerous tools: the default deny list (the spec's plus upstream 2026.9.6's additions) minus
`gateway.tools.allow`, plus `gateway.tools.deny`, which always wins.

Tools this gateway has (each a thin front for a bus method, so the owner of the state answers):
- `agents_list`: the configured agents and the default one (answered here).
- `cron` (alias `automations`; denied by default): `action` status|list|get|add|update|remove|run|runs ->
  `cron.<action>` on the scheduler, `wake` -> the scheduler's `wake`; `args` are the method's params.
- `gateway` (denied by default): `action` `config.get` (the redacted config) or `restart`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from openclaw_sup.gateway import agent_http as ah
from openclaw_sup.gateway import http_common as hc
from openclaw_sup.gateway.protocol import MethodError

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

BODY_MAX = 2 * 1024 * 1024
TOOL_TIMEOUT_S = 30.0
SPEC_DENY = ("exec", "spawn", "shell", "fs_write", "fs_delete", "fs_move", "apply_patch", "sessions_spawn",
             "sessions_send", "cron", "gateway", "nodes")
UPSTREAM_DENY = ("terminal", "portal", "conversations_list", "conversations_send", "conversations_turn",
                 "automations", "plugins", "computer", "mobile_ui", "openclaw")
DEFAULT_HTTP_DENY = tuple(dict.fromkeys((*SPEC_DENY, *UPSTREAM_DENY)))
ALIASES = {"automations": "cron"}
CRON_ACTIONS = ("status", "list", "get", "add", "update", "remove", "run", "runs")


class ToolInputError(ValueError):
    """Arguments the tool cannot use: a 400 `tool_error` naming what to fix."""


Tool = Callable[["GatewayCore", str | None, dict[str, Any]], Awaitable[Any]]


def canonical(name: str) -> str:
    low = name.strip().lower()
    return ALIASES.get(low, low)


def denied_tools(cfg: dict[str, Any]) -> set[str]:
    tools_cfg = (cfg.get("gateway") or {}).get("tools") or {}
    allow = {canonical(n) for n in tools_cfg.get("allow") or [] if isinstance(n, str)}
    deny = {canonical(n) for n in tools_cfg.get("deny") or [] if isinstance(n, str)}
    return {canonical(n) for n in DEFAULT_HTTP_DENY if canonical(n) not in allow} | deny


def result_of(payload: Any) -> dict[str, Any]:
    """Upstream's tool result shape: a text part for a model, the structured value in `details`."""
    return {"content": [{"type": "text", "text": orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()}],
            "details": payload}


async def agents_list(core: GatewayCore, action: str | None, args: dict[str, Any]) -> Any:
    cfg = core.host.gateway_config()
    default = ah.default_agent(cfg)
    return {"defaultAgentId": default,
            "agents": [{"id": a, "default": a == default} for a in ah.agent_ids(cfg)]}


async def cron(core: GatewayCore, action: str | None, args: dict[str, Any]) -> Any:
    if action == "wake":
        return await core.host.call_worker("scheduler", "wake", args, timeout=TOOL_TIMEOUT_S)
    if action not in CRON_ACTIONS:
        raise ToolInputError(f"cron: action must be one of {', '.join((*CRON_ACTIONS, 'wake'))} (got {action!r})")
    return await core.host.call_worker("scheduler", f"cron.{action}", args, timeout=TOOL_TIMEOUT_S)


async def gateway(core: GatewayCore, action: str | None, args: dict[str, Any]) -> Any:
    if action == "config.get":
        return await core.methods.config_get({})
    if action == "restart":
        return await core.methods.restart_request({"reason": "tools.invoke gateway restart",
                                                   "restartDelayMs": args.get("delayMs", 0)})
    raise ToolInputError(f"gateway: action must be config.get or restart (got {action!r})")


TOOLS: dict[str, Tool] = {"agents_list": agents_list, "cron": cron, "gateway": gateway}


def _fail(status: int, type_: str, message: str) -> web.Response:
    return hc.json_response(status, {"ok": False, "error": {"type": type_, "message": message}})


async def handle_tools_invoke(request: web.Request, core: GatewayCore) -> web.StreamResponse:
    body = await hc.post_json(request, core, BODY_MAX)
    if isinstance(body, web.StreamResponse):
        return body
    if not isinstance(body, dict):
        return _fail(400, "invalid_request", "tools.invoke body must be a JSON object")
    raw_name = body.get("name") if body.get("name") is not None else body.get("tool")
    name = canonical(raw_name) if isinstance(raw_name, str) else ""
    if not name:
        return _fail(400, "invalid_request", "tools.invoke requires name")
    cfg = core.host.gateway_config()
    agent = body.get("agentId")
    if agent is not None and (not isinstance(agent, str) or agent.strip().lower() not in ah.agent_ids(cfg)):
        return _fail(400, "invalid_request", f"unknown agent id {agent!r}")
    tool = TOOLS.get(name)
    if tool is None or name in denied_tools(cfg):
        return _fail(404, "not_found", f"Tool not available: {raw_name.strip()}")
    args = body.get("args") if isinstance(body.get("args"), dict) else {}
    action = body.get("action").strip() if isinstance(body.get("action"), str) else None
    if body.get("dryRun") is True:
        return hc.json_response(200, {"ok": True, "result": result_of({"dryRun": True, "tool": name,
                                                                       "action": action})})
    try:
        payload = await tool(core, action, args)
    except ToolInputError as exc:
        return _fail(400, "tool_error", str(exc))
    except MethodError as exc:
        if exc.code == "INVALID_REQUEST":
            return _fail(400, "tool_error", str(exc))
        core.log("warning", f"tools-invoke: tool {name} failed: {exc}")
        return _fail(500, "tool_error", f"tool execution failed: {exc}")
    return hc.json_response(200, {"ok": True, "result": result_of(payload)})
