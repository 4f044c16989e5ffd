"""Where a profile keeps its config, state, sockets and logs.

Import-light on purpose: the `status` command resolves paths with nothing but `os`.
Precedence follows the upstream gateway: explicit env vars beat the profile, the profile beats the default.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

DEFAULT_PORT = 18789
DEV_PORT = 19001
DEV_PROFILE = "dev"
NODE_RUN_DIR = "run-node"
"""Where `openclaw-sup node run` keeps its bus, control socket and lock, beside a gateway's `run/`."""


def derived_ports(port: int) -> dict[str, int]:
    """Ports upstream derives from the gateway port: browser control = port + 2, managed CDP range
    port + 11 .. port + 110 (18800-18899 for the default 18789; 19012-19111 for --dev)."""
    return {"browserControl": port + 2, "cdpFirst": port + 11, "cdpLast": port + 110}


def home_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    for key in ("OPENCLAW_HOME", "HOME", "USERPROFILE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    return Path.home()


class ProfilePaths:
    """Every filesystem location of one gateway instance (a plain class: `dataclasses` costs `status` 8 ms)."""

    __slots__ = ("config_path", "dev", "profile", "state_dir")

    def __init__(self, profile: str | None, state_dir: Path, config_path: Path, dev: bool = False) -> None:
        self.profile = profile
        self.state_dir = state_dir
        self.config_path = config_path
        self.dev = dev

    def __repr__(self) -> str:
        return f"ProfilePaths(profile={self.profile!r}, state_dir={self.state_dir!r}, config={self.config_path!r})"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def bus_endpoint(self) -> str:
        return f"ipc://{self.run_dir / 'bus.sock'}"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "ctl.sock"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "gateway.lock"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "state"

    @property
    def label(self) -> str:
        return self.profile or "default"

    def default_log_file(self, date: str) -> Path:
        """Upstream's dated JSONL log: /tmp/openclaw/openclaw[-<profile>]-YYYY-MM-DD.log."""
        name = f"openclaw-{self.profile}-{date}.log" if self.profile else f"openclaw-{date}.log"
        return Path("/tmp/openclaw") / name


def resolve(
    profile: str | None = None, dev: bool = False, env: dict[str, str] | None = None
) -> ProfilePaths:
    """Resolve paths as upstream does: `--dev` is profile `dev`; env vars beat the profile defaults."""
    env = os.environ if env is None else env
    if dev:
        profile = DEV_PROFILE
    profile = profile or env.get("OPENCLAW_PROFILE") or None
    if profile is not None:
        validate_profile_name(profile)
    home = home_dir(env)
    default_state = home / (f".openclaw-{profile}" if profile else ".openclaw")
    state_dir = Path(env["OPENCLAW_STATE_DIR"]).expanduser() if env.get("OPENCLAW_STATE_DIR") else default_state
    if env.get("OPENCLAW_CONFIG_PATH"):
        config_path = Path(env["OPENCLAW_CONFIG_PATH"]).expanduser()
    else:
        config_path = state_dir / "openclaw.json"
    return ProfilePaths(profile=profile, state_dir=state_dir, config_path=config_path, dev=dev or profile == "dev")


_AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$", re.IGNORECASE)
_AGENT_ID_BAD = re.compile(r"[^a-z0-9_-]+")


def normalize_agent_id(value: str | None, default: str = "main") -> str:
    """A filesystem-safe agent id, since it names directories under `agents/`: a valid id (letters, digits,
    `_`, `-`, at most 64) is kept; anything else is cleaned as upstream does (lower case, other characters
    to `-`), and what cannot be represented is `default`."""
    trimmed = (value or "").strip()
    if _AGENT_ID.match(trimmed):
        return trimmed
    cleaned = _AGENT_ID_BAD.sub("-", trimmed.lower()).strip("-")[:64]
    return cleaned or default


def resolve_or_report(profile: str | None, dev: bool) -> ProfilePaths | None:
    """`resolve` for a command's entry point: a bad profile name is said on stderr and None returned (exit 2)."""
    try:
        return resolve(profile, dev)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return None


def validate_profile_name(name: str) -> None:
    ok = name and len(name) <= 64 and all(c.isalnum() or c in "-_" for c in name)
    if not ok:
        raise ValueError(
            f"invalid profile name {name!r}: use letters, digits, '-' or '_' (at most 64 characters)"
        )


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by its owner only (0700), and every parent it has to create too (a plain
    `mkdir(parents=True)` gives the parents 0755); an existing directory is tightened."""
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_file(path: Path) -> None:
    """Make an existing file readable by its owner only (0600); a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)


def loose_mode(path: Path) -> int | None:
    """The permission bits of `path` if group or others may access it (it holds secrets), else None."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o077 else None


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (another user's counts: it is there, only not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
