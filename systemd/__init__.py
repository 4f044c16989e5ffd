"""systemd units for the gateway: names, locations, rendering from the shipped templates, and reading back.

`gateway install` renders `openclaw-gateway.service.in` (user unit) or `openclaw-gateway-system.service.in`
(system unit); `gateway status` and `doctor` parse an installed unit to learn which profile, config and port
the service really runs, so drift between the CLI and the service can be reported.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

Scope = Literal["user", "system"]

UNIT_DIR_ENV = "OPENCLAW_SUP_UNIT_DIR"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
TEMPLATES: dict[str, str] = {"user": "openclaw-gateway.service.in", "system": "openclaw-gateway-system.service.in"}
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_UNSAFE_ARG = re.compile(r"""[\s"'\\;]""")


def unit_name(profile: str | None) -> str:
    """Upstream's names: `openclaw-gateway.service`, or `openclaw-gateway-<profile>.service`."""
    return f"openclaw-gateway-{profile}.service" if profile else "openclaw-gateway.service"


def unit_dir(scope: Scope, env: dict[str, str] | None = None) -> Path:
    """Where units of a scope live; `OPENCLAW_SUP_UNIT_DIR` overrides both (tests, packagers)."""
    env = dict(os.environ) if env is None else env
    if env.get(UNIT_DIR_ENV):
        return Path(env[UNIT_DIR_ENV]).expanduser()
    if scope == "system":
        return SYSTEM_UNIT_DIR
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config_home) / "systemd" / "user"


def escape_specifiers(text: str) -> str:
    """`%` starts a unit specifier everywhere in a unit file; a literal one is written `%%`."""
    return text.replace("%", "%%")


def quote(value: str) -> str:
    """One word as systemd's own quoting reads it back (double quotes, backslash escapes)."""
    if value and not _UNSAFE_ARG.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: list[str]) -> str:
    """An `ExecStart=` value: specifiers and `$` escaped, so no argument is ever expanded by systemd."""
    return " ".join(quote(escape_specifiers(a).replace("$", "$$")) for a in argv)


def environment_line(env: dict[str, str]) -> str:
    """`Environment=` lines, one variable each; only non-secret values belong here (secrets: EnvironmentFile)."""
    return "\n".join(f"Environment={quote(escape_specifiers(f'{k}={v}'))}" for k, v in env.items())


@dataclass(frozen=True)
class UnitSpec:
    """Everything a rendered unit depends on; equal specs render byte-identical units."""

    scope: Scope
    description: str
    exec_start: list[str]
    environment: dict[str, str]
    environment_file: Path
    kill: str = "/bin/kill"
    user: str | None = None
    state_directory: str | None = None
    read_write_paths: tuple[Path, ...] = ()
    restart_sec: int = 1
    limit_nofile: int = 65536
    start_limit_burst: int = 5
    start_limit_interval_sec: int = 60
    watchdog_sec: int = 30
    timeout_start_sec: int = 90
    timeout_stop_sec: int = 30


def _state_paths(spec: UnitSpec) -> str:
    lines = []
    if spec.state_directory:
        lines += [f"StateDirectory={spec.state_directory}", "StateDirectoryMode=0700"]
    if spec.read_write_paths:
        lines.append("ReadWritePaths=" + " ".join(quote("-" + escape_specifiers(str(p)))
                                                  for p in spec.read_write_paths))
    return "\n".join(lines)


def render_unit(spec: UnitSpec) -> str:
    """Fill the scope's template; a placeholder left unfilled is a bug, not a unit to install."""
    if spec.scope == "system" and not spec.user:
        raise ValueError("a system unit needs the user it runs as")
    template = resources.files(__package__).joinpath(TEMPLATES[spec.scope]).read_text(encoding="utf-8")
    values = {
        "SCOPE": spec.scope,
        "DESCRIPTION": escape_specifiers(spec.description),
        "EXEC_START": exec_line(spec.exec_start),
        "KILL": spec.kill,
        "ENVIRONMENT": environment_line(spec.environment),
        "ENVIRONMENT_FILE": escape_specifiers(str(spec.environment_file)),
        "USER": spec.user or "",
        "STATE_PATHS": _state_paths(spec),
        "RESTART_SEC": str(spec.restart_sec),
        "LIMIT_NOFILE": str(spec.limit_nofile),
        "START_LIMIT_BURST": str(spec.start_limit_burst),
        "START_LIMIT_INTERVAL_SEC": str(spec.start_limit_interval_sec),
        "WATCHDOG_SEC": str(spec.watchdog_sec),
        "TIMEOUT_START_SEC": str(spec.timeout_start_sec),
        "TIMEOUT_STOP_SEC": str(spec.timeout_stop_sec),
    }

    def fill(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template {TEMPLATES[spec.scope]} has an unknown placeholder @{m.group(1)}@")
        return values[m.group(1)]

    lines = [_PLACEHOLDER.sub(fill, line) for line in template.splitlines()]
    return "\n".join(line for line, raw in zip(lines, template.splitlines(), strict=True)
                     if line or not _PLACEHOLDER.fullmatch(raw)) + "\n"


def _unescape(word: str) -> str:
    return word.replace("%%", "%").replace("$$", "$")


@dataclass
class InstalledUnit:
    """What an installed unit says about the service: how it starts and with which environment."""

    path: Path
    text: str
    entries: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[str]:
        return [v for k, v in self.entries.get(section, []) if k == key]

    def value(self, section: str, key: str) -> str | None:
        found = self.values(section, key)
        return found[-1] if found else None

    @property
    def scope(self) -> Scope:
        return "system" if self.value("Service", "User") else "user"

    @property
    def user(self) -> str | None:
        return self.value("Service", "User")

    @property
    def exec_start(self) -> list[str]:
        raw = self.value("Service", "ExecStart") or ""
        try:
            return [_unescape(w) for w in shlex.split(raw.lstrip("@-:+!"))]
        except ValueError:
            return raw.split()

    @property
    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for raw in self.values("Service", "Environment"):
            try:
                words = shlex.split(raw)
            except ValueError:
                words = raw.split()
            for word in words:
                key, sep, value = word.partition("=")
                if sep:
                    env[key] = value.replace("%%", "%")
        return env

    @property
    def environment_files(self) -> list[Path]:
        return [Path(v.lstrip("-").replace("%%", "%")) for v in self.values("Service", "EnvironmentFile")]


def parse_unit(path: Path) -> InstalledUnit:
    """Read a unit file into its sections' `key=value` entries (keys may repeat, as `Environment=` does)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    unit = InstalledUnit(path=path, text=text)
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            continue
        key, sep, value = stripped.partition("=")
        if sep:
            unit.entries.setdefault(section, []).append((key.strip(), value.strip()))
    return unit
