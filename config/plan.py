"""From a config edit to what the supervisor does about it.

`worker_specs` derives the wanted workers from `openclaw.json`; each spec carries only the config that worker
consumes, so its digest changes only when its own config does. `ReloadPlan.between` compares two sets of
specs. `classify` turns two configs into the changed paths and the effect of each (section 2 of the
operations spec, adapted to one worker per channel account); `decide` says what a reload mode does with
them; `restart_hint` is the line `openclaw-sup config set` prints, computed from that same decision.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import field
from enum import StrEnum
from typing import Any

from openclaw_sup.config.document import RELOAD_MODES, reload_mode
from openclaw_sup.config.models import max_concurrent
from openclaw_sup.config.record import record
from openclaw_sup.config.schema import IMPLEMENTED_CHANNELS
from openclaw_sup.config.settings import SupervisorSettings, WorkerSpec

__all__ = [
    "RELOAD_MODES",
    "Change",
    "ChangeSet",
    "Decision",
    "Effect",
    "ReloadPlan",
    "changed_paths",
    "classify",
    "decide",
    "effect_of",
    "reload_mode",
    "restart_hint",
    "same_json",
    "worker_specs",
]

DEFAULT_ACCOUNT = "default"
HINT_RESTART = "Restart the gateway to apply."
HINT_HOT = "Change will apply without restarting the gateway."
HINT_NONE = "No gateway restart needed."


@record(frozen=True)
class ReloadPlan:
    start: tuple[WorkerSpec, ...] = ()
    stop: tuple[str, ...] = ()
    respawn: tuple[WorkerSpec, ...] = ()
    keep: tuple[str, ...] = ()

    @classmethod
    def between(cls, old: Iterable[WorkerSpec], new: Iterable[WorkerSpec]) -> ReloadPlan:
        before = {s.name: s for s in old}
        after = {s.name: s for s in new}
        return cls(
            start=tuple(s for n, s in after.items() if n not in before),
            stop=tuple(n for n in before if n not in after),
            respawn=tuple(s for n, s in after.items() if n in before and before[n].digest() != s.digest()),
            keep=tuple(n for n, s in after.items() if n in before and before[n].digest() == s.digest()),
        )

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.respawn)

    @property
    def touched(self) -> tuple[str, ...]:
        """Every worker name this plan starts, stops or respawns."""
        return (*(s.name for s in self.start), *self.stop, *(s.name for s in self.respawn))

    def summary(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in (
            ("start", [s.name for s in self.start]), ("stop", list(self.stop)),
            ("respawn", [s.name for s in self.respawn]), ("keep", list(self.keep))) if names]
        return "; ".join(parts) or "no worker changes"


# ================================================================ workers wanted by a config

def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _truthy_env(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "").strip().lower() in ("1", "true", "yes", "on")


CRON_DISABLED_LINE = "cron: scheduler disabled; jobs will not run automatically"


def cron_skipped(env: Mapping[str, str]) -> bool:
    """`OPENCLAW_SKIP_CRON=1`: no scheduler worker at all. `cron.enabled: false` still starts it, idle: it serves
    the `cron.*` methods and runs a job only when asked (`cron.run`), as upstream."""
    return _truthy_env(env, "OPENCLAW_SKIP_CRON")


def channel_accounts(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`channel:<ch>:<account>` -> that account's effective config (defaults < channel base < account)."""
    channels = _dict(cfg.get("channels"))
    defaults = _dict(channels.get("defaults"))
    inherited = {k: defaults[k] for k in ("groupPolicy",) if k in defaults}
    out: dict[str, dict[str, Any]] = {}
    for ch in IMPLEMENTED_CHANNELS:
        ch_cfg = channels.get(ch)
        if not isinstance(ch_cfg, dict) or ch_cfg.get("enabled") is False:
            continue
        base = {k: v for k, v in ch_cfg.items() if k not in ("accounts", "defaultAccount")}
        accounts = _dict(ch_cfg.get("accounts")) or {DEFAULT_ACCOUNT: {}}
        for acct_id, acct in accounts.items():
            if not isinstance(acct, dict) or acct.get("enabled") is False:
                continue
            out[f"channel:{ch}:{acct_id}"] = {**inherited, **base, **acct, "channel": ch, "accountId": acct_id}
    return out


def _heartbeats(agents: dict[str, Any]) -> dict[str, Any]:
    entries = agents.get("list")
    return {str(a.get("id")): a["heartbeat"] for a in (entries if isinstance(entries, list) else ())
            if isinstance(a, dict) and "heartbeat" in a}


def _without_heartbeats(agents: dict[str, Any]) -> dict[str, Any]:
    """The agent worker's view of `agents`: heartbeats belong to the scheduler."""
    out = dict(agents)
    if isinstance(out.get("defaults"), dict):
        out["defaults"] = {k: v for k, v in out["defaults"].items() if k != "heartbeat"}
    if isinstance(out.get("list"), list):
        out["list"] = [{k: v for k, v in a.items() if k != "heartbeat"} if isinstance(a, dict) else a
                       for a in out["list"]]
    return out


def worker_specs(
    cfg: dict[str, Any], settings: SupervisorSettings | None = None, env: Mapping[str, str] | None = None
) -> list[WorkerSpec]:
    """The workers a gateway config asks for, plus the extra workers of openclaw-sup's side file."""
    env = os.environ if env is None else env
    base = settings or SupervisorSettings()

    def spec(name: str, kind: str, options: dict[str, Any]) -> WorkerSpec:
        return WorkerSpec(name, kind, options, restart=base.restart, liveness=base.liveness, stop=base.stop,
                          on_demand=name in base.on_demand)

    cron = _dict(cfg.get("cron"))
    agents = _dict(cfg.get("agents"))
    specs: list[WorkerSpec] = []
    if not cron_skipped(env):
        specs.append(spec("scheduler", "scheduler", {
            "cron": cron,
            "heartbeat": _dict(agents.get("defaults")).get("heartbeat"),
            "agentHeartbeats": _heartbeats(agents),
        }))
    specs.append(spec("agent", "agent", {"agents": _without_heartbeats(agents), "models": _dict(cfg.get("models")),
                                         "tools": _dict(cfg.get("tools"))}))
    browser = _dict(cfg.get("browser"))
    if browser.get("enabled") is not False:  # on by default, as upstream's; Chromium starts on first use
        specs.append(spec("browser", "browser", browser))
    if not _truthy_env(env, "OPENCLAW_SKIP_CHANNELS"):
        turns = max_concurrent(agents)  # a channel account asks no more turns at once than the agent runs
        for name, options in channel_accounts(cfg).items():
            specs.append(spec(name, f"channel.{options['channel']}", {**options, "maxConcurrent": turns}))
    extra = {s.name: s for s in settings.workers} if settings else {}
    specs = [extra.pop(s.name, s) for s in specs]
    return [*specs, *extra.values()]


# ================================================================ what changed, and its effect

class Effect(StrEnum):
    RESPAWN = "respawn"  # hot-safe: respawn the owning worker(s)
    IN_PLACE = "in-place"  # hot-safe: the supervisor re-applies the section itself
    REBIND = "rebind"  # the listener must be re-bound: the "restart" class of upstream
    NONE = "none"  # nothing at runtime


EFFECT_RULES: tuple[tuple[str, Effect], ...] = (
    ("gateway.reload", Effect.NONE),
    ("gateway.remote", Effect.NONE),
    ("gateway.controlUi", Effect.IN_PLACE),
    ("gateway", Effect.REBIND),
    ("channels", Effect.RESPAWN),
    ("cron", Effect.RESPAWN),
    ("agents", Effect.RESPAWN),
    ("models", Effect.RESPAWN),
    ("tools", Effect.RESPAWN),
    ("browser", Effect.RESPAWN),
    ("hooks", Effect.IN_PLACE),
    ("logging", Effect.IN_PLACE),
)

RESTART_HINT_PREFIXES = ("plugins.entries",)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def section_of(path: str) -> str:
    """The rule prefix a path falls under (`gateway.controlUi.enabled` -> `gateway.controlUi`)."""
    return next((prefix for prefix, _ in EFFECT_RULES if _under(path, prefix)), path.split(".")[0])


def effect_of(path: str) -> Effect:
    return next((effect for prefix, effect in EFFECT_RULES if _under(path, prefix)), Effect.NONE)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike `==`, `true` is not `1` and `1` is not `1.0`; key order does not matter."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths that differ; objects are compared key by key (a missing one as empty), lists whole."""
    if isinstance(old, dict) or isinstance(new, dict):
        if not (isinstance(old, dict) or old is None) or not (isinstance(new, dict) or new is None):
            return [prefix] if old != new else []
        a, b = old or {}, new or {}
        out: list[str] = []
        for key in dict.fromkeys([*a, *b]):
            sub = f"{prefix}.{key}" if prefix else key
            if key not in a or key not in b:
                if isinstance(a.get(key), dict) or isinstance(b.get(key), dict):
                    out += changed_paths(a.get(key), b.get(key), sub) or [sub]
                else:
                    out.append(sub)
            elif not same_json(a[key], b[key]):
                out += changed_paths(a[key], b[key], sub)
        return out
    return [] if same_json(old, new) else [prefix]


def _owners(path: str, touched: Iterable[str]) -> tuple[str, ...]:
    """The workers a path belongs to, among those whose specs actually changed."""
    parts = path.split(".")
    top = parts[0]
    if top == "channels":
        if len(parts) >= 4 and parts[2] == "accounts":
            return tuple(n for n in touched if n == f"channel:{parts[1]}:{parts[3]}")
        prefix = "channel:" if len(parts) == 1 or parts[1] == "defaults" else f"channel:{parts[1]}:"
        return tuple(n for n in touched if n.startswith(prefix))
    if top == "agents" and path in ("agents", "agents.defaults", "agents.list"):
        owners: tuple[str, ...] = ("scheduler", "agent")
    elif path == "agents.defaults.maxConcurrent":
        return tuple(n for n in touched if n == "agent" or n.startswith("channel:"))
    elif top == "agents":
        owners = ("scheduler",) if "heartbeat" in parts else ("agent",)
    else:
        owners = {"cron": ("scheduler",), "models": ("agent",), "tools": ("agent",), "browser": ("browser",)}.get(
            top, ())
    return tuple(n for n in touched if n in owners)


@record(frozen=True)
class Change:
    path: str
    effect: Effect
    workers: tuple[str, ...] = ()


@record(frozen=True)
class ChangeSet:
    changes: tuple[Change, ...] = ()
    workers: ReloadPlan = field(default_factory=ReloadPlan)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(c.path for c in self.changes)

    @property
    def empty(self) -> bool:
        return not self.changes

    def of(self, effect: Effect) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.effect is effect)

    @property
    def forces_restart_hint(self) -> bool:
        """Upstream cannot prove a plugin reloads itself, so `plugins.entries.*` always says restart."""
        return any(_under(c.path, p) for c in self.changes for p in RESTART_HINT_PREFIXES)


def classify(
    old: dict[str, Any], new: dict[str, Any], settings: SupervisorSettings | None = None,
    env: Mapping[str, str] | None = None,
) -> ChangeSet:
    """The changed paths of two (substituted) configs, each with its effect and the workers it touches."""
    plan = ReloadPlan.between(worker_specs(old, settings, env), worker_specs(new, settings, env))
    touched = plan.touched
    changes = []
    for path in changed_paths(old, new):
        effect = effect_of(path)
        changes.append(Change(path, effect, _owners(path, touched) if effect is Effect.RESPAWN else ()))
    return ChangeSet(tuple(changes), plan)


# ================================================================ what a reload mode does

@record(frozen=True)
class Decision:
    """What the supervisor does for one config edit.

    Apply in this order: `full_restart` (then nothing else matters); otherwise re-bind the listener when
    `rebind_listener`, re-apply each section of `apply_in_place` ("hooks", "logging", "gateway.controlUi"),
    carry out `workers` (a ReloadPlan: stop, respawn, start), and log `restart required` for `not_applied`.
    """

    mode: str
    changes: ChangeSet
    workers: ReloadPlan = field(default_factory=ReloadPlan)
    apply_in_place: tuple[str, ...] = ()
    rebind_listener: bool = False
    full_restart: bool = False
    not_applied: tuple[str, ...] = ()

    @property
    def respawn(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.workers.respawn)

    @property
    def start(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.workers.start)

    @property
    def stop(self) -> tuple[str, ...]:
        return self.workers.stop

    @property
    def applies_anything(self) -> bool:
        return self.full_restart or self.rebind_listener or bool(self.apply_in_place) or not self.workers.empty

    def restart_required_line(self) -> str | None:
        """The log line for changes a mode leaves unapplied (hot, off)."""
        if not self.not_applied:
            return None
        return f"config reload: restart required for {', '.join(self.not_applied)} (reload mode {self.mode})"

    def summary(self) -> str:
        if self.full_restart:
            return "full restart"
        parts = [self.workers.summary()] if not self.workers.empty else []
        if self.rebind_listener:
            parts.append("re-bind listener")
        if self.apply_in_place:
            parts.append(f"apply {', '.join(self.apply_in_place)}")
        if self.not_applied:
            parts.append(f"not applied {', '.join(self.not_applied)}")
        return "; ".join(parts) or "nothing to do"


def decide(mode: str, changes: ChangeSet) -> Decision:
    """Per mode: off applies nothing; hot applies the safe part; restart restarts; hybrid applies it all in place."""
    if mode not in RELOAD_MODES:
        raise ValueError(f"unknown reload mode {mode!r} (expected one of {', '.join(RELOAD_MODES)})")
    effective = tuple(c for c in changes.changes if c.effect is not Effect.NONE)
    in_place = tuple(dict.fromkeys(section_of(c.path) for c in changes.of(Effect.IN_PLACE)))
    rebind = tuple(c.path for c in changes.of(Effect.REBIND))
    if mode == "off":
        return Decision(mode, changes, not_applied=tuple(c.path for c in effective))
    if mode == "restart":
        return Decision(mode, changes, full_restart=bool(effective) or not changes.workers.empty)
    if mode == "hot":
        return Decision(mode, changes, workers=changes.workers, apply_in_place=in_place, not_applied=rebind)
    return Decision(mode, changes, workers=changes.workers, apply_in_place=in_place, rebind_listener=bool(rebind))


def restart_hint(decision: Decision) -> str:
    """Exactly one of upstream's three lines, from the decision the reloader would take."""
    if (decision.changes.forces_restart_hint or decision.full_restart or decision.rebind_listener
            or decision.not_applied):
        return HINT_RESTART
    hot = any(c.effect in (Effect.RESPAWN, Effect.IN_PLACE) for c in decision.changes.changes)
    if hot or decision.applies_anything:
        return HINT_HOT
    return HINT_NONE
