"""The gateway config as the supervisor and the CLI see it: parsed, `${VAR}`-substituted and validated.

`read_config` never raises on schema errors (the CLI's `config validate` and the reloader want the report);
`load_config` raises `ConfigError` with the upstream text (`Invalid config at <file>:` and one line per
error), which the gateway turns into exit 78.
"""

from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from typing import Any

from openclaw_sup.config.loader import ConfigError, load_json5, substitute_env
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.config.record import record
from openclaw_sup.config.schema import ValidationReport, default_for, validate

RELOAD_MODES = ("off", "hot", "restart", "hybrid")


@record(frozen=True)
class Config:
    """One read of `openclaw.json`: `data` is substituted, `raw` keeps `${VAR}` for owned writes."""

    path: Path
    data: dict[str, Any]
    raw: dict[str, Any]
    exists: bool
    report: ValidationReport = field(default_factory=ValidationReport)
    missing_env: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.report.ok

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def gateway_mode(self) -> str | None:
        mode = self.section("gateway").get("mode")
        return mode if isinstance(mode, str) else None

    @property
    def reload_mode(self) -> str:
        return reload_mode(self.data)

    def error_text(self) -> str:
        return self.report.format(str(self.path))


def reload_mode(cfg: dict[str, Any]) -> str:
    """`gateway.reload.mode`, defaulting to hybrid as the seeds say."""
    gateway = cfg.get("gateway")
    reload = gateway.get("reload") if isinstance(gateway, dict) else None
    mode = reload.get("mode") if isinstance(reload, dict) else None
    return mode if mode in RELOAD_MODES else str(default_for("gateway.reload.mode"))


def _path_of(where: ProfilePaths | Path | str) -> Path:
    return where.config_path if isinstance(where, ProfilePaths) else Path(where)


def read_config(where: ProfilePaths | Path | str, env: dict[str, str] | None = None) -> Config:
    """Parse and validate; raises ConfigError only when the file cannot be read or parsed."""
    path = _path_of(where)
    env = dict(os.environ) if env is None else env
    raw = load_json5(path, env, substitute=False)
    missing: list[str] = []
    data = substitute_env(raw, env, missing)
    return Config(path=path, data=data, raw=raw, exists=path.exists(), report=validate(data),
                  missing_env=tuple(dict.fromkeys(missing)))


def load_config(where: ProfilePaths | Path | str, env: dict[str, str] | None = None) -> Config:
    """Parse and validate; an invalid config raises ConfigError naming the file, each path, value and reason."""
    config = read_config(where, env)
    if not config.valid:
        raise ConfigError(config.error_text())
    return config


def start_block_reason(config: Config, allow_unconfigured: bool = False) -> str | None:
    """The seeds' start guard: only `gateway.mode=local` starts; a file without `gateway.mode` is clobbered."""
    if allow_unconfigured or config.gateway_mode == "local":
        return None
    if config.gateway_mode is None and config.exists:
        return ("Gateway start blocked: existing config is missing gateway.mode; set gateway.mode=local "
                f"in {config.path} (or pass --allow-unconfigured)")
    return "Gateway start blocked: set gateway.mode=local (or pass --allow-unconfigured)"
