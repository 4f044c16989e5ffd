"""launchd property lists for the gateway: labels, locations, rendering from the shipped template, reading back.

The template `ai.openclaw.gateway.plist` holds the fixed keys (`RunAtLoad`, `KeepAlive`, `ThrottleInterval`,
`ExitTimeOut`, `AbandonProcessGroup` false so launchd reaps every worker with the supervisor); rendering adds
the label, `ProgramArguments`, `EnvironmentVariables` and the log paths.
"""

from __future__ import annotations

import os
import plistlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Scope = Literal["user", "system"]

PLIST_DIR_ENV = "OPENCLAW_SUP_LAUNCHD_DIR"
TEMPLATE = "ai.openclaw.gateway.plist"
SYSTEM_PLIST_DIR = Path("/Library/LaunchDaemons")


def label(profile: str | None) -> str:
    """Upstream's labels: `ai.openclaw.gateway`, or `ai.openclaw.<profile>` for a named profile."""
    return f"ai.openclaw.{profile}" if profile else "ai.openclaw.gateway"


def plist_dir(scope: Scope, env: dict[str, str] | None = None) -> Path:
    """`~/Library/LaunchAgents` (user) or `/Library/LaunchDaemons` (system); `OPENCLAW_SUP_LAUNCHD_DIR` overrides."""
    env = dict(os.environ) if env is None else env
    if env.get(PLIST_DIR_ENV):
        return Path(env[PLIST_DIR_ENV]).expanduser()
    if scope == "system":
        return SYSTEM_PLIST_DIR
    return Path(env.get("HOME") or Path.home()) / "Library" / "LaunchAgents"


def log_path(profile: str | None, home: Path) -> Path:
    """`~/Library/Logs/openclaw/gateway[-<profile>].log`: where launchd sends the supervisor's stdout and stderr."""
    return home / "Library" / "Logs" / "openclaw" / (f"gateway-{profile}.log" if profile else "gateway.log")


@dataclass(frozen=True)
class PlistSpec:
    label: str
    program_arguments: list[str]
    environment: dict[str, str]
    log_file: Path
    user: str | None = None
    working_directory: Path | None = None
    throttle_interval: int = 5
    exit_timeout: int = 30


def plist_data(spec: PlistSpec) -> dict[str, Any]:
    """The property list as a dict: the template's fixed keys plus this service's own."""
    with resources.files(__package__).joinpath(TEMPLATE).open("rb") as f:
        data: dict[str, Any] = plistlib.load(f)
    data.update(
        Label=spec.label,
        ProgramArguments=list(spec.program_arguments),
        EnvironmentVariables=dict(spec.environment),
        StandardOutPath=str(spec.log_file),
        StandardErrorPath=str(spec.log_file),
        ThrottleInterval=spec.throttle_interval,
        ExitTimeOut=spec.exit_timeout,
    )
    if spec.user:
        data["UserName"] = spec.user
    if spec.working_directory is not None:
        data["WorkingDirectory"] = str(spec.working_directory)
    return data


def render_plist(spec: PlistSpec) -> bytes:
    return plistlib.dumps(plist_data(spec), sort_keys=False)


def parse_plist(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data = plistlib.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a property list dictionary")
    return data
