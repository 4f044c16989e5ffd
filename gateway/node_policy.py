"""Which node commands the gateway lets through, and who may approve them (upstream's node command policy).

A command is usable only when the node declares it, its approved surface carries it, and this allowlist (the
platform defaults, desktop host commands once approved, `gateway.nodes.commands.allow` opt-ins, minus
`gateway.nodes.commands.deny`) includes it. Tables are data; the texts are upstream's, because clients and
operators match them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SYSTEM_RUN_COMMANDS = ("system.run", "system.run.prepare", "system.which")
EXEC_APPROVALS_COMMANDS = ("system.execApprovals.get", "system.execApprovals.set")
DESKTOP_HOST_COMMANDS = frozenset({
    *SYSTEM_RUN_COMMANDS, *EXEC_APPROVALS_COMMANDS, "fs.listDir", "browser.proxy", "browser.proxy.upload.v1",
    "mcp.tools.call.v1", "screen.snapshot", "desktop.stream",
})
DANGEROUS_COMMANDS = frozenset({
    "camera.snap", "camera.clip", "camera.ptz.control", "screen.record", "contacts.add", "calendar.add",
    "reminders.add", "sms.send", "sms.search", "health.summary",
})
_MOBILE_COMMON = ("camera.list", "location.get", "device.info", "device.status", "contacts.search",
                  "calendar.events", "reminders.list", "photos.latest", "motion.activity", "motion.pedometer",
                  "system.notify")
PLATFORM_DEFAULTS: dict[str, frozenset[str]] = {
    "ios": frozenset(_MOBILE_COMMON),
    "watchos": frozenset({"device.info", "device.status", "system.notify"}),
    "android": frozenset({*_MOBILE_COMMON, "notifications.list", "notifications.actions", "device.permissions",
                          "device.health", "device.apps", "callLog.search", "mobile.ui.observe", "mobile.ui.act"}),
    "macos": frozenset({*_MOBILE_COMMON, "camera.ptz.status", "device.apps", "computer.act"}),
    "windows": frozenset({"camera.list", "location.get", "device.info", "device.status", "system.notify",
                          "computer.act"}),
    "linux": frozenset({"system.notify", "computer.act"}),
    "unknown": frozenset({"camera.list", "location.get", "system.notify"}),
}
DESKTOP_PLATFORMS = frozenset({"macos", "windows", "linux"})
TALK_PTT_COMMANDS = frozenset({"talk.ptt.start", "talk.ptt.stop", "talk.ptt.cancel", "talk.ptt.once"})
ADMIN_APPROVE_COMMANDS = frozenset({*SYSTEM_RUN_COMMANDS, *EXEC_APPROVALS_COMMANDS, "browser.proxy",
                                   "browser.proxy.upload.v1", "fs.listDir"})
SHELL_COMMANDS = frozenset({"system.run", "system.run.prepare"})
"""Run only through the exec tool (`host=node`), never through a client's `node.invoke`."""

_PLATFORM_ALIASES = {"darwin": "macos", "mac": "macos", "macos": "macos", "ios": "ios", "ipados": "ios",
                     "watchos": "watchos", "android": "android", "win32": "windows", "windows": "windows",
                     "linux": "linux"}


def platform_key(platform: Any) -> str:
    text = platform.strip().lower() if isinstance(platform, str) else ""
    for prefix, key in _PLATFORM_ALIASES.items():
        if text.startswith(prefix):
            return key
    return "unknown"


def _config_list(nodes_cfg: Mapping[str, Any], key: str) -> set[str]:
    commands = nodes_cfg.get("commands") if isinstance(nodes_cfg.get("commands"), Mapping) else {}
    values = commands.get(key) if isinstance(commands, Mapping) else None
    return {v.strip() for v in values or () if isinstance(v, str) and v.strip()}


def allowlist(platform: Any, caps: Iterable[str], nodes_cfg: Mapping[str, Any]) -> set[str]:
    """The gateway's ceiling for one node: what it may ever be approved for."""
    key = platform_key(platform)
    allowed = set(PLATFORM_DEFAULTS[key])
    if key in DESKTOP_PLATFORMS:
        allowed |= DESKTOP_HOST_COMMANDS
    if "talk" in set(caps):
        allowed |= TALK_PTT_COMMANDS
    allowed |= _config_list(nodes_cfg, "allow")
    return allowed - _config_list(nodes_cfg, "deny")


def surface_commands(declared: Iterable[str], platform: Any, caps: Iterable[str],
                     nodes_cfg: Mapping[str, Any]) -> list[str]:
    """The declared commands the gateway would carry into an approval request (others are withheld)."""
    ceiling = allowlist(platform, caps, nodes_cfg)
    return sorted({c for c in declared if isinstance(c, str) and c in ceiling})


def required_approve_scopes(commands: Iterable[str]) -> list[str]:
    """Scopes an operator needs to approve a surface: pairing, plus write, or admin for exec-grade commands."""
    commands = list(commands)
    if not commands:
        return ["operator.pairing"]
    if any(c in ADMIN_APPROVE_COMMANDS for c in commands):
        return ["operator.pairing", "operator.admin"]
    return ["operator.pairing", "operator.write"]


def rejection(command: str, *, declared: Iterable[str], effective: Iterable[str], platform: Any,
              caps: Iterable[str], nodes_cfg: Mapping[str, Any]) -> str | None:
    """Why `command` may not be invoked on this node (upstream's hint text), or None when it may."""
    declared, effective = list(declared), set(effective)
    shown = platform if isinstance(platform, str) and platform else "unknown"
    if command not in allowlist(platform, caps, nodes_cfg):
        if command.startswith("talk."):
            return f'node command not allowed: "{command}" requires a trusted Talk-capable node'
        if command in _config_list(nodes_cfg, "deny"):
            return f'node command not allowed: "{command}" is blocked by gateway.nodes.commands.deny'
        if command in DANGEROUS_COMMANDS:
            return f'node command not allowed: "{command}" requires explicit gateway.nodes.commands.allow opt-in'
        return f'node command not allowed: "{command}" is not in the allowlist for platform "{shown}"'
    if declared and command not in declared:
        return f'node command not allowed: the node (platform: {shown}) does not support "{command}"'
    if command not in effective:
        if command in declared:
            return ("node command not allowed: the node's declared command surface is pending approval; run "
                    "`openclaw nodes pending`, then `openclaw nodes approve <requestId>`")
        return "node command not allowed: the node did not declare any supported commands"
    return None
