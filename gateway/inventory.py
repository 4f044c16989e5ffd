"""What the gateway can list from the config and the disk: `models.list`, `skills.status`, `hooks.status`,
`doctor.memory.status`, `config.schema.lookup`, in upstream's shapes.

Skills (`SKILL.md`) and internal hooks (`HOOK.md`) are found where upstream looks for them (the agent
workspace, `<stateDir>/skills|hooks`, `skills.load.extraDirs`) and shown with their requirements checked, but
reported not eligible / not loadable: openclaw-sup's agent does not run them yet. Likewise there is no memory
backend, which `doctor.memory.status` says plainly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from openclaw_sup.config import models as model_cfg
from openclaw_sup.config.plan import Effect, effect_of
from openclaw_sup.config.schema import SECTIONS, Spec, spec_for_path
from openclaw_sup.gateway.protocol import MethodError, invalid

NOT_RUN = "openclaw-sup's agent does not run skills or internal hooks yet"
MEMORY_UNSUPPORTED = "memory search is not supported yet (openclaw-sup has no memory backend)"
REQUIREMENT_KINDS = ("bins", "anyBins", "env", "config", "os")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def agent_ids(cfg: dict[str, Any]) -> list[str]:
    ids = [str(a["id"]) for a in _dict(cfg.get("agents")).get("list") or () if isinstance(a, dict) and a.get("id")]
    return ids or ["main"]


def workspace_dir(cfg: dict[str, Any], state_dir: Path, agent_id: str = "main") -> Path:
    agents = _dict(cfg.get("agents"))
    entry = next((a for a in agents.get("list") or () if isinstance(a, dict) and a.get("id") == agent_id), {})
    ws = entry.get("workspace") or _dict(agents.get("defaults")).get("workspace")
    return Path(ws).expanduser() if isinstance(ws, str) and ws else state_dir / "workspace"


# ---------------------------------------------------------------- models.list

def model_refs(cfg: dict[str, Any], agent_id: str | None) -> dict[str, dict[str, Any]]:
    """`provider/model` -> what the config says of it: the agents' models and fallbacks, the
    `agents.defaults.models` allowlist (with aliases) and each `models.providers.<id>.models[]` catalog."""
    agents = _dict(cfg.get("agents"))
    refs: dict[str, dict[str, Any]] = {}
    for agent in [agent_id] if agent_id else agent_ids(cfg):
        choice = model_cfg.agent_model(agents, agent)
        if choice.configured:
            for ref in (choice.primary, *choice.fallbacks):
                refs.setdefault(ref, {})
    for ref, entry in _dict(_dict(agents.get("defaults")).get("models")).items():
        refs.setdefault(ref, {}).update(_dict(entry))
    for provider, pcfg in _dict(_dict(cfg.get("models")).get("providers")).items():
        for entry in _dict(pcfg).get("models") or ():
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
                refs.setdefault(f"{provider}/{entry['id']}", {}).update(entry)
    return refs


def models_list(params: dict[str, Any], cfg: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    view = params.get("view", "default")
    if view not in ("default", "configured", "provider-config", "all"):
        raise invalid("invalid models.list params: view must be default, configured, provider-config or all",
                      field="view")
    agent_id = params.get("agentId")
    if agent_id is not None and (not isinstance(agent_id, str) or agent_id not in agent_ids(cfg)):
        raise invalid(f"invalid models.list params: unknown agentId {agent_id!r}", field="agentId")
    only = params.get("provider")
    if only is not None and not isinstance(only, str):
        raise invalid("invalid models.list params: provider must be a string", field="provider")
    agents, models = _dict(cfg.get("agents")), _dict(cfg.get("models"))
    alias_of = {ref: alias for alias, ref in model_cfg.aliases(agents).items()}
    out = []
    for ref, entry in model_refs(cfg, agent_id).items():
        try:
            provider, model = model_cfg.split_ref(ref, agents)
        except model_cfg.ModelConfigError:
            continue
        if only and provider != only.strip().lower():
            continue
        pcfg = model_cfg.provider_config(models, provider)
        row: dict[str, Any] = {"id": model, "name": str(entry.get("name") or model), "provider": provider}
        if ref in alias_of:
            row["alias"] = alias_of[ref]
        if pcfg is None:
            row.update(available=False, unavailableReason="missing-auth")
        else:
            has_key = model_cfg.credential(provider, pcfg, state_dir, agent_id or "main") is not None
            row["available"] = has_key or not pcfg.get("needsKey")
            if not row["available"]:
                row["unavailableReason"] = "missing-auth"
            host = urlsplit(str(pcfg.get("baseUrl") or "")).hostname
            row["local"] = pcfg.get("api") == "echo" or host in LOCAL_HOSTS
        for key in ("contextWindow", "contextTokens", "reasoning", "input"):
            if key in entry:
                row[key] = entry[key]
        out.append(row)
    return {"models": out}


# ---------------------------------------------------------------- skills and internal hooks on disk

def frontmatter(path: Path) -> dict[str, Any]:
    """The `---` header of a SKILL.md / HOOK.md: `key: value` lines; a JSON value (metadata) is decoded."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    if not lines or lines[0].strip() != "---":
        return {}
    out: dict[str, Any] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or key.startswith((" ", "\t")):
            continue
        value = value.strip().strip('"').strip("'") if not value.strip().startswith(("{", "[")) else value.strip()
        try:
            out[key.strip()] = json.loads(value) if value.startswith(("{", "[")) else value
        except ValueError:
            out[key.strip()] = value
    return out


def _requirements(meta: dict[str, Any], cfg: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(required, missing) per kind, as upstream checks them: binaries on PATH, env vars, config paths, OS."""
    import shutil  # here: its archive codecs (bz2, lzma, zlib) are not worth loading at every gateway start

    spec = _dict(_dict(_dict(meta.get("metadata")).get("openclaw")).get("requires"))
    need = {k: [str(v) for v in spec.get(k) or () if isinstance(v, str)] for k in REQUIREMENT_KINDS}
    missing = {
        "bins": [b for b in need["bins"] if shutil.which(b) is None],
        "anyBins": need["anyBins"] if need["anyBins"] and not any(shutil.which(b) for b in need["anyBins"]) else [],
        "env": [e for e in need["env"] if not os.environ.get(e)],
        "config": [c for c in need["config"] if not _config_has(cfg, c)],
        "os": need["os"] if need["os"] and os.uname().sysname.lower() not in [o.lower() for o in need["os"]] else [],
    }
    return need, missing


def _config_has(cfg: dict[str, Any], path: str) -> bool:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node not in (None, "", False)


def _found(dirs: list[tuple[Path, str]], marker: str) -> Iterator[tuple[Path, str]]:
    seen: set[str] = set()
    for root, source in dirs:
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if (sub / marker).is_file() and sub.name not in seen:
                seen.add(sub.name)
                yield sub, source


def skills_status(params: dict[str, Any], cfg: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    agent_id = params.get("agentId") or "main"
    if not isinstance(agent_id, str) or agent_id not in agent_ids(cfg):
        raise invalid(f"invalid skills.status params: unknown agentId {agent_id!r}", field="agentId")
    workspace, managed = workspace_dir(cfg, state_dir, agent_id), state_dir / "skills"
    skills_cfg = _dict(cfg.get("skills"))
    extra = [(Path(d).expanduser(), "openclaw-extra") for d in _dict(skills_cfg.get("load")).get("extraDirs") or ()
             if isinstance(d, str)]
    entries = _dict(skills_cfg.get("entries"))
    out = []
    for base, source in _found([(workspace / "skills", "openclaw-workspace"), (managed, "openclaw-managed"), *extra],
                               "SKILL.md"):
        meta = frontmatter(base / "SKILL.md")
        oc = _dict(_dict(meta.get("metadata")).get("openclaw"))
        key = str(oc.get("skillKey") or meta.get("name") or base.name)
        need, missing = _requirements(meta, cfg)
        row = {"name": str(meta.get("name") or base.name), "description": str(meta.get("description") or ""),
               "source": source, "bundled": False, "filePath": str(base / "SKILL.md"), "baseDir": str(base),
               "skillKey": key, "always": bool(oc.get("always")),
               "disabled": _dict(entries.get(key)).get("enabled") is False, "blockedByAllowlist": False,
               "blockedByAgentFilter": False, "eligible": False, "platformIncompatible": bool(missing["os"]),
               "modelVisible": False, "userInvocable": False, "commandVisible": False, "requirements": need,
               "missing": missing, "configChecks": [], "install": []}
        for k in ("emoji", "homepage"):
            if isinstance(oc.get(k), str):
                row[k] = oc[k]
        out.append(row)
    return {"workspaceDir": str(workspace), "managedSkillsDir": str(managed), "agentId": agent_id, "skills": out}


def hooks_status(params: dict[str, Any], cfg: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    agent_id = params.get("agentId") or "main"
    if not isinstance(agent_id, str) or agent_id not in agent_ids(cfg):
        raise invalid(f"invalid hooks.status params: unknown agentId {agent_id!r}", field="agentId")
    workspace, managed = workspace_dir(cfg, state_dir, agent_id), state_dir / "hooks"
    entries = _dict(_dict(_dict(cfg.get("hooks")).get("internal")).get("entries"))
    out = []
    for base, source in _found([(workspace / "hooks", "openclaw-workspace"), (managed, "openclaw-managed")],
                               "HOOK.md"):
        meta = frontmatter(base / "HOOK.md")
        oc = _dict(_dict(meta.get("metadata")).get("openclaw"))
        key = str(oc.get("hookKey") or meta.get("name") or base.name)
        need, missing = _requirements(meta, cfg)
        handler = next((base / f"handler.{ext}" for ext in ("js", "mjs", "ts") if (base / f"handler.{ext}").is_file()),
                       None)
        row = {"name": str(meta.get("name") or base.name), "description": str(meta.get("description") or ""),
               "source": source, "filePath": str(base / "HOOK.md"), "baseDir": str(base),
               "handlerPath": str(handler) if handler else None, "hookKey": key,
               "events": [str(e) for e in oc.get("events") or () if isinstance(e, str)], "unknownEvents": [],
               "always": bool(oc.get("always")), "enabledByConfig": _dict(entries.get(key)).get("enabled") is not False,
               "requirementsSatisfied": not any(missing.values()), "loadable": False, "managedByPlugin": False,
               "requirements": need, "missing": missing, "configChecks": [], "install": []}
        for k in ("emoji", "homepage"):
            if isinstance(oc.get(k), str):
                row[k] = oc[k]
        out.append(row)
    return {"workspaceDir": str(workspace), "managedHooksDir": str(managed), "hooks": out}


def doctor_memory_status(params: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    agent_id = params.get("agentId") or agent_ids(cfg)[0]
    return {"agentId": agent_id, "provider": None,
            "embedding": {"ok": False, "checked": False, "error": MEMORY_UNSUPPORTED},
            "dreaming": {"enabled": False}}


# ---------------------------------------------------------------- config.schema.lookup

RELOAD_KINDS = {Effect.REBIND: "restart", Effect.RESPAWN: "hot", Effect.IN_PLACE: "hot", Effect.NONE: "none"}
JSON_TYPES = {"map": "object", "union": None, "any": None, "false": "boolean"}


def _json_schema(spec: Spec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = JSON_TYPES.get(spec["type"], spec["type"])
    if kind:
        out["type"] = kind
    if spec["type"] == "union":
        out["anyOf"] = [_json_schema(a) for a in spec["alts"]]
    for ours, theirs in (("min", "minimum"), ("max", "maximum"), ("default", "default"), ("pattern", "pattern"),
                         ("format", "format")):
        if spec.get(ours) is not None:
            out[theirs] = spec[ours]
    if spec.get("enum"):
        out["enum"] = list(spec["enum"])
    if spec["type"] == "object":
        out["additionalProperties"] = False
    if spec.get("secret"):
        out["sensitive"] = True
    return out


def _children(spec: Spec, path: str) -> list[dict[str, Any]]:
    if spec["type"] != "object":
        return []
    rows = []
    for key, sub in spec["fields"].items():
        sub_path = f"{path}.{key}"
        rows.append({"key": key, "path": sub_path, "type": _json_schema(sub).get("type", "any"), "required": False,
                     "hasChildren": sub["type"] in ("object", "map"),
                     "reloadKind": RELOAD_KINDS[effect_of(sub_path)]})
    return rows


def config_schema_lookup(params: dict[str, Any]) -> dict[str, Any]:
    path = params.get("path")
    if not isinstance(path, str) or not path.strip():
        raise invalid("invalid config.schema.lookup params: path must be a non-empty string (e.g. gateway.port)",
                      field="path")
    path = path.strip()
    spec = spec_for_path(path)
    if spec is None:
        raise MethodError("INVALID_REQUEST", f"config schema path not found: {path} (openclaw-sup's schema covers "
                                             f"{', '.join(SECTIONS)})", details={"field": "path"})
    return {"path": path, "schema": _json_schema(spec), "reloadKind": RELOAD_KINDS[effect_of(path)], "hintPath": path,
            "children": _children(spec, path)}
