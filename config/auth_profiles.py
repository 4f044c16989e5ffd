"""Model provider credentials in upstream's per-agent store: `<stateDir>/agents/<agentId>/agent/auth-profiles.json`.

Shape (as upstream): `{"version": 1, "profiles": {"<provider>:<name>": {"type": "token", "provider", "token"} |
{"type": "api_key", "provider", "key"}}}`. `models auth paste-token` writes `<provider>:manual`. The file is
written atomically with mode 0600 in a 0700 directory; an agent other than `main` falls back to main's file.
Import-light: the CLI uses it. Nothing here ever prints or logs a secret.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from openclaw_sup.config.paths import ensure_private_dir

STORE_VERSION = 1
FILE_NAME = "auth-profiles.json"
MANUAL = "manual"


@functools.lru_cache(maxsize=64)
def profiles_path(state_dir: Path, agent_id: str = "main") -> Path:
    return state_dir.joinpath("agents", agent_id, "agent", FILE_NAME)


def env_var(provider: str) -> str:
    """The environment variable holding a provider's key: `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `<ID>_API_KEY`."""
    return re.sub(r"[^A-Z0-9]+", "_", provider.upper()).strip("_") + "_API_KEY"


def load(path: Path) -> dict[str, Any]:
    """The store, or an empty one when the file is missing or unreadable (never raises)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": STORE_VERSION, "profiles": {}}
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        return {"version": STORE_VERSION, "profiles": {}}
    return data


_parsed: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _profiles(path: Path) -> dict[str, Any]:
    """The file's profiles, parsed again only when it changed (a stat instead of a read on every model call); the
    real CLI and `store_token` replace it atomically, so a new inode, size or mtime says it did."""
    try:
        st = os.stat(path)
    except OSError:
        _parsed.pop(path, None)
        return {}
    signature = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _parsed.get(path)
    if hit is None or hit[0] != signature:
        if len(_parsed) >= 64:
            _parsed.clear()
        hit = _parsed[path] = (signature, load(path)["profiles"])
    return hit[1]


def _secret_of(profile: Any) -> str | None:
    if not isinstance(profile, dict):
        return None
    value = profile.get("token") if profile.get("type") == "token" else profile.get("key")
    if not isinstance(value, str):
        value = profile.get("key") or profile.get("token") or profile.get("access")
    return value.strip() if isinstance(value, str) and value.strip() else None


def find(state_dir: Path, provider: str, agent_id: str = "main") -> tuple[str, str, str] | None:
    """`(profileId, type, secret)` of the first stored profile for `provider` (this agent's file, then main's)."""
    paths = [profiles_path(state_dir, agent_id)]
    if agent_id != "main":
        paths.append(profiles_path(state_dir, "main"))
    for path in paths:
        profiles = _profiles(path)
        order = sorted(profiles, key=lambda pid: (not pid.endswith(f":{MANUAL}"), pid))
        for pid in order:
            prof = profiles[pid]
            if isinstance(prof, dict) and prof.get("provider", pid.split(":")[0]) == provider:
                secret = _secret_of(prof)
                if secret:
                    return pid, str(prof.get("type", "token")), secret
    return None


def store_token(state_dir: Path, provider: str, token: str, agent_id: str = "main",
                profile_name: str = MANUAL) -> tuple[Path, str]:
    """Save a pasted token as profile `<provider>:<name>`; return the file and the profile id."""
    path = profiles_path(state_dir, agent_id)
    ensure_private_dir(path.parent)
    data = load(path)
    data["version"] = data.get("version") or STORE_VERSION
    pid = f"{provider}:{profile_name}"
    data["profiles"][pid] = {"type": "token", "provider": provider, "token": token}
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    os.chmod(path, 0o600)
    return path, pid
