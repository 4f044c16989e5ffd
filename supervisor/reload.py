"""Config reload: read, validate, diff against what runs, decide per reload mode, apply.

Triggers: the file watcher (unless `gateway.reload.mode` is off), SIGHUP and the control socket. An invalid
edit is skipped (`config reload skipped (invalid config): ...`) and the last good config stays in force; a
file that lost `gateway.mode` while the running config has it is treated as clobbered and skipped too. The
outcome shows in `health.configReload`, in the log and as a `config.changed` event.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from openclaw_sup.config.document import read_config, reload_mode
from openclaw_sup.config.loader import ConfigError
from openclaw_sup.config.paths import DEFAULT_PORT, DEV_PORT
from openclaw_sup.config.plan import Decision, ReloadPlan, classify, decide
from openclaw_sup.config.settings import SupervisorSettings, load_settings
from openclaw_sup.supervisor.watcher import ConfigWatcher, content_hash

if TYPE_CHECKING:
    from openclaw_sup.supervisor.arbiter import Supervisor

DEFAULT_DEBOUNCE_MS = 200


def plan_view(decision: Decision) -> dict[str, Any]:
    """What the last reload did, worker by worker (the dashboard's Config view, `health.configReload.plan`)."""
    every = [s.name for s in decision.changes.workers.respawn] + list(decision.changes.workers.keep)
    if decision.full_restart:
        return {"respawn": every, "start": [], "stop": [], "keep": [], "paths": list(decision.changes.paths)}
    return {"respawn": list(decision.respawn), "start": list(decision.start), "stop": list(decision.stop),
            "keep": list(decision.workers.keep), "paths": list(decision.changes.paths)}


class ConfigReloader:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.watcher: ConfigWatcher | None = None
        self.status: dict[str, Any] = {"hotReloadStatus": "active", "mode": "hybrid"}

    # -- watching ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._sync_watcher(reload_mode(self.sup.gateway_cfg))

    def _sync_watcher(self, mode: str) -> None:
        self.status.update(mode=mode, hotReloadStatus="disabled" if mode == "off" else "active")
        self._publish()
        if mode == "off":
            if self.watcher is not None:
                self.watcher.stop()
            return
        reload_cfg = (self.sup.gateway_cfg.get("gateway") or {}).get("reload") or {}
        debounce = reload_cfg.get("debounceMs", DEFAULT_DEBOUNCE_MS)
        debounce_ms = int(debounce) if isinstance(debounce, int) else DEFAULT_DEBOUNCE_MS
        if self.watcher is None:
            self.watcher = ConfigWatcher(self.sup.paths.config_path, self._changed, debounce_ms)
        self.watcher.debounce = debounce_ms / 1000
        self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _changed(self) -> None:
        self.sup.spawn_task(self.reload("file change"), "config reload")

    def _publish(self) -> None:
        if self.sup.core is not None:
            self.sup.core.set_reload_status(self.status)

    # -- loading -------------------------------------------------------------------------------------

    def load(self) -> tuple[dict[str, Any], SupervisorSettings] | str:
        """The new config and settings, or why they cannot be used."""
        try:
            cfg = read_config(self.sup.paths)
            settings = load_settings(self.sup.paths)
        except ConfigError as exc:
            return str(exc)
        if not cfg.valid:
            return cfg.report.one_line()
        if (self.sup.gateway_cfg.get("gateway") or {}).get("mode") and not cfg.gateway_mode:
            return (f"{cfg.path}: gateway.mode is missing but the running config has it; the file looks "
                    "clobbered (gateway-mode-missing-vs-last-good)")
        return cfg.data, settings

    def port_for(self, cfg: dict[str, Any]) -> int:
        """Port precedence on reload: a --port or OPENCLAW_GATEWAY_PORT pin wins over the file, as at start."""
        if self.sup.opts.port_pinned:
            return self.sup.opts.port
        env = os.environ.get("OPENCLAW_GATEWAY_PORT")
        if env and env.isdigit():
            return int(env)
        port = (cfg.get("gateway") or {}).get("port")
        return port if isinstance(port, int) else (DEV_PORT if self.sup.paths.dev else DEFAULT_PORT)

    # -- applying ------------------------------------------------------------------------------------

    async def reload(self, trigger: str) -> Decision | None:
        sup = self.sup
        async with sup.exclusive():
            if sup.stopping:
                return None
            loaded = self.load()
            if isinstance(loaded, str):
                sup.log("error", f"config reload skipped (invalid config): {loaded}")
                self.status.update(lastError=loaded, lastReloadAt=int(time.time() * 1000), lastOutcome="skipped")
                self._publish()
                return None
            new_cfg, settings = loaded
            mode = reload_mode(new_cfg)
            if mode == "off" and trigger != "file change":
                mode = "hybrid"  # an operator's explicit reload (SIGHUP, control socket) is applied
            changes = classify(sup.gateway_cfg, new_cfg, settings)
            new_specs = sup.wanted_specs(new_cfg, settings)
            changes = replace(changes, workers=ReloadPlan.between(sup.specs, new_specs))
            decision = decide(mode, changes)
            sup.log("info", f"config reload ({trigger}, mode {mode}): {decision.summary()}")
            sup.notifier.reloading()
            try:
                if decision.full_restart:
                    sup.gateway_cfg, sup.settings = new_cfg, settings
                    await sup.restart_in_place(notify_clients=True)
                elif mode != "off":
                    await self._apply(decision, new_cfg, settings)
            finally:
                sup.notifier.ready(sup.status_summary())
            line = decision.restart_required_line()
            if line:
                sup.log("warn", line)
            self.status.update(lastReloadAt=int(time.time() * 1000), lastOutcome=decision.summary(), lastError=None,
                               restartRequired=list(decision.not_applied) or None, trigger=trigger,
                               plan=plan_view(decision))
            self._sync_watcher(reload_mode(new_cfg))
            if sup.core is not None:
                digest = content_hash(sup.paths.config_path)
                sup.core.hub.broadcast("config.changed", {"path": str(sup.paths.config_path),
                                                          "hash": f"sha256:{digest}", "ts": int(time.time() * 1000)},
                                       scope="operator.read")
            return decision

    async def _apply(self, decision: Decision, new_cfg: dict[str, Any], settings: SupervisorSettings) -> None:
        sup = self.sup
        applied = dict(new_cfg)
        if decision.not_applied:
            applied["gateway"] = sup.gateway_cfg.get("gateway", {})
        if decision.rebind_listener:
            await sup.rebind(new_cfg.get("gateway") or {}, self.port_for(new_cfg))
        if "logging" in decision.apply_in_place:
            sup.apply_logging(new_cfg.get("logging") or {})
        await sup.apply_worker_plan(decision.workers)
        standbys_changed = settings.fork_server != sup.settings.fork_server
        sup.gateway_cfg, sup.settings = applied, settings
        if standbys_changed:
            sup.refresh_standbys()
