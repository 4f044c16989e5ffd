"""The payloads of `health`, `status` and `config.get`, with the fields upstream's carry and the CLI reads.

Beside upstream's fields each keeps what openclaw-sup adds (`workers`, `supervisor`, `supervisorVersion`,
`readiness`). Session counts come from the agent worker (it owns the stores): `status` asks it, `health`
shows the last answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

from openclaw_sup import __version__
from openclaw_sup.config.document import read_config
from openclaw_sup.config.durations import DurationError, parse_duration_ms
from openclaw_sup.config.heartbeat import ACK_MAX_CHARS, DEFAULT_EVERY, DEFAULT_PROMPT, DEFAULT_TARGET
from openclaw_sup.config.loader import ConfigError
from openclaw_sup.config.schema import REDACTED, redact, secret_values
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.inventory import agent_ids
from openclaw_sup.gateway.loop_health import process_memory
from openclaw_sup.gateway.protocol import UPSTREAM_VERSION

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

TASK_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "lost")
TASK_RUNTIMES = ("subagent", "acp", "cli", "cron")
AUDIT_CODES = ("stale_queued", "stale_running", "lost", "delivery_failed", "missing_cleanup",
               "inconsistent_timestamps")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def every_ms(every: Any) -> int:
    try:
        return parse_duration_ms(every)
    except DurationError:
        return parse_duration_ms(DEFAULT_EVERY)


def heartbeats(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Each agent's heartbeat as health shows it: the defaults with the agent's own entry over them."""
    agents = _dict(cfg.get("agents"))
    base = _dict(_dict(agents.get("defaults")).get("heartbeat"))
    own = {str(a.get("id")): _dict(a.get("heartbeat")) for a in agents.get("list") or () if isinstance(a, dict)}
    out = []
    for agent_id in agent_ids(cfg):
        hb = {**base, **own.get(agent_id, {})}
        every = str(hb.get("every", DEFAULT_EVERY))
        ms = every_ms(every)
        out.append({"agentId": agent_id, "enabled": ms > 0, "every": every, "everyMs": ms,
                    "prompt": str(hb.get("prompt") or DEFAULT_PROMPT),
                    "target": str(hb.get("target") or DEFAULT_TARGET),
                    "ackMaxChars": ACK_MAX_CHARS})
    return out


def sessions_view(core: GatewayCore, summary: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """agentId -> {path, count, recent} from the agent worker's last summary."""
    rows = {a["agentId"]: a for a in (summary or {}).get("byAgent") or () if isinstance(a, dict)}
    out = {}
    for agent_id in agent_ids(core.host.gateway_config()) + [a for a in rows if a not in agent_ids(
            core.host.gateway_config())]:
        row = rows.get(agent_id) or {}
        out[agent_id] = {"path": row.get("path") or str(core.state_dir / "agents" / agent_id / "agent" /
                                                         "openclaw-agent.sqlite"),
                         "count": row.get("count", 0), "recent": row.get("recent") or []}
    return out


def health(core: GatewayCore, summary: dict[str, Any] | None, duration_ms: int = 0) -> dict[str, Any]:
    cfg = core.host.gateway_config()
    beats = heartbeats(cfg)
    sessions = sessions_view(core, summary)
    default = beats[0]["agentId"]
    ready = core.host.readiness()
    snap: dict[str, Any] = {
        "ok": True, "ts": now_ms(), "durationMs": duration_ms,
        "plugins": {"loaded": [], "errors": [], "unavailable": []},
        "configReload": core.reload_status(),
        "channels": {}, "channelOrder": [], "channelLabels": {},
        "heartbeatSeconds": beats[0]["everyMs"] // 1000, "defaultAgentId": default,
        "agents": [{"agentId": b["agentId"], "isDefault": b["agentId"] == default,
                    "heartbeat": {k: v for k, v in b.items() if k != "agentId"},
                    "sessions": sessions.get(b["agentId"], {"path": "", "count": 0, "recent": []})} for b in beats],
        "sessions": sessions.get(default, {"path": "", "count": 0, "recent": []}),
        "modelRuntime": {"degraded": False, "pendingAgents": []},
        "readiness": {"ready": ready["ready"], "pending": ready.get("pending")},
        "workers": core.host.worker_view(),
    }
    loop = core.loop_health.snapshot()
    if loop is not None:
        snap["eventLoop"] = loop
    return snap


def status(core: GatewayCore, params: dict[str, Any], summary: dict[str, Any] | None,
           unavailable: str | None) -> dict[str, Any]:
    cfg = core.host.gateway_config()
    beats = heartbeats(cfg)
    sessions = sessions_view(core, summary)
    by_agent = [{"agentId": a, **v, **({"unavailable": unavailable} if unavailable else {})}
                for a, v in sessions.items()]
    recent = sorted((r for v in sessions.values() for r in v["recent"]), key=lambda r: -int(r.get("updatedAt") or 0))
    defaults = _dict((summary or {}).get("defaults"))
    out: dict[str, Any] = {
        "runtimeVersion": UPSTREAM_VERSION,
        "supervisorVersion": __version__,
        "heartbeat": {"defaultAgentId": beats[0]["agentId"],
                      "agents": [{k: b[k] for k in ("agentId", "enabled", "every", "everyMs")} for b in beats]},
        "channelSummary": [], "queuedSystemEvents": [], "degradedSecretOwners": [], "degradedPlugins": [],
        "tasks": {"total": 0, "active": 0, "terminal": 0, "failures": 0,
                  "byStatus": dict.fromkeys(TASK_STATUSES, 0), "byRuntime": dict.fromkeys(TASK_RUNTIMES, 0)},
        "taskAudit": {"total": 0, "warnings": 0, "errors": 0, "byCode": dict.fromkeys(AUDIT_CODES, 0)},
        "sessions": {"paths": [v["path"] for v in sessions.values()],
                     "count": sum(v["count"] for v in sessions.values()),
                     "defaults": {"model": defaults.get("model"), "contextTokens": defaults.get("contextTokens")},
                     "recent": recent[:5], "byAgent": by_agent},
        "modelRuntime": {"degraded": False, "pendingAgents": []},
        "processMemory": process_memory(),
        "pid": os.getpid(),
        "supervisor": core.host.supervisor_view(),
        "workers": core.host.worker_view(),
    }
    loop = core.loop_health.snapshot()
    if loop is not None:
        out["eventLoop"] = loop
    if params.get("includeCliProjection") is True:
        out["cliProjection"] = {"agents": {"defaultId": beats[0]["agentId"], "ownership": "sole",
                                           "selectionRequired": False, "rows": [{"id": a} for a in agent_ids(cfg)]},
                                "updateChannel": None, "memoryPlugin": {"enabled": False, "slot": None}}
    return out


def _mem_kb(field: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def system_info(core: GatewayCore, port: int) -> dict[str, Any]:
    """The host and this process, as upstream's `system.info` (Python's version in place of Node's)."""
    uname = os.uname()
    disk = os.statvfs(core.state_dir)
    total, free = disk.f_blocks * disk.f_frsize, disk.f_bavail * disk.f_frsize
    out: dict[str, Any] = {
        "machineName": uname.nodename, "hostname": uname.nodename, "platform": sys.platform,
        "release": uname.release, "arch": {"x86_64": "x64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
        "osLabel": f"{uname.sysname} {uname.release}", "port": port, "pythonVersion": platform.python_version(),
        "supervisorVersion": __version__, "pid": os.getpid(), "processInstanceId": core.hub.instance_id,
        "uptimeMs": int((time.monotonic() - core.started) * 1000), "cpuCount": os.cpu_count() or 1,
        "loadAverage": [round(x, 2) for x in os.getloadavg()], "memoryTotalBytes": _mem_kb("MemTotal"),
        "memoryFreeBytes": _mem_kb("MemAvailable"), "processMemory": process_memory(),
        "disks": [{"path": str(core.state_dir), "totalBytes": total, "availableBytes": free}],
        "diskTotalBytes": total, "diskAvailableBytes": free, "diskPath": str(core.state_dir),
    }
    model = _cpu_model()
    if model:
        out["cpuModel"] = model
    loop = core.loop_health.snapshot()
    if loop is not None:
        out["eventLoop"] = loop
    return out


def _hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_get(core: GatewayCore) -> dict[str, Any]:
    """The config file as upstream shows it: `raw` text and `parsed` (as written, `${VAR}` kept), `resolved`
    (substituted) and `config` (what runs), every secret replaced by upstream's sentinel; `valid` and `issues`
    judge the file as it is now (a skipped edit shows here while the last good config keeps running)."""
    path = core.host.config_path()
    running = core.host.gateway_config()
    try:
        data = path.read_bytes()
        exists = True
    except OSError:
        data, exists = b"", False
    raw = data.decode(errors="replace")
    out: dict[str, Any] = {"path": str(path), "exists": exists, "includedPaths": [], "issues": [], "warnings": [],
                           "legacyIssues": []}
    try:
        doc = read_config(path) if exists else None
    except ConfigError as exc:
        doc = None
        out["issues"] = [{"path": "", "message": str(exc)}]
    secrets = set(secret_values(running))
    if doc is not None:
        secrets |= set(secret_values(doc.data))
        out["parsed"] = redact(doc.raw)
        out["resolved"] = redact(doc.data)
        out["issues"] = [{"path": i.path, "message": i.message} for i in doc.report.errors]
        out["warnings"] = [{"path": i.path, "message": i.message} for i in doc.report.notices]
    for secret in sorted(secrets, key=len, reverse=True):
        raw = raw.replace(secret, REDACTED)
    applied = _hash(orjson.dumps(running, option=orjson.OPT_SORT_KEYS))
    out.update(raw=raw, valid=doc.valid if doc is not None else not out["issues"], config=redact(running),
               hash=_hash(data),
               configRevisionHash=_hash(orjson.dumps(doc.data, option=orjson.OPT_SORT_KEYS)) if doc else applied,
               appliedConfigHash=applied)
    return out
