"""The launchd property list: upstream's labels and log paths, read back through plistlib."""

from __future__ import annotations

import json
import os
import plistlib
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import BIN
from openclaw_sup.launchd import PlistSpec, label, log_path, render_plist


def test_rendered_plist_round_trips(tmp_path: Path) -> None:
    spec = PlistSpec(label=label("work"), program_arguments=[str(BIN), "gateway", "--port", "19100", "--profile",
                                                             "work"],
                     environment={"OPENCLAW_STATE_DIR": str(tmp_path / "s & <x>")},
                     log_file=log_path("work", tmp_path))
    data = plistlib.loads(render_plist(spec))
    assert data["Label"] == "ai.openclaw.work"
    assert data["ProgramArguments"] == spec.program_arguments
    assert data["KeepAlive"] is True and data["RunAtLoad"] is True
    assert data["AbandonProcessGroup"] is False
    assert data["EnvironmentVariables"] == {"OPENCLAW_STATE_DIR": str(tmp_path / "s & <x>")}
    assert data["StandardOutPath"] == str(tmp_path / "Library/Logs/openclaw/gateway-work.log")
    assert data["StandardErrorPath"] == data["StandardOutPath"]
    assert isinstance(data["ThrottleInterval"], int) and isinstance(data["ExitTimeOut"], int)
    assert "UserName" not in data
    assert label(None) == "ai.openclaw.gateway"
    assert log_path(None, tmp_path) == tmp_path / "Library/Logs/openclaw/gateway.log"


@pytest.mark.parametrize("profile", [None, "work"])
@pytest.mark.live
def test_install_writes_the_plist(tmp_path: Path, profile: str | None) -> None:
    home = tmp_path / "home"
    agents = tmp_path / "LaunchAgents"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}, "HOME": str(home),
           "OPENCLAW_SUP_SERVICE_MANAGER": "launchd", "OPENCLAW_SUP_LAUNCHD_DIR": str(agents)}
    prof = ["--profile", profile] if profile else []

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *prof, *args], env={**env, **extra}, capture_output=True, text=True,
                              timeout=60)

    res = cli("gateway", "install", "--port", "19100", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    name = f"ai.openclaw.{profile}" if profile else "ai.openclaw.gateway"
    plist = agents / f"{name}.plist"
    assert out["path"] == str(plist) and out["serviceManager"]["available"] is False
    data = plistlib.loads(plist.read_bytes())
    state = home / (f".openclaw-{profile}" if profile else ".openclaw")
    assert data["Label"] == name
    assert data["ProgramArguments"] == [str(BIN), "gateway", "--port", "19100", *prof]
    assert data["EnvironmentVariables"]["OPENCLAW_STATE_DIR"] == str(state)
    assert data["StandardOutPath"] == str(log_path(profile, home))
    assert data["KeepAlive"] is True and data["AbandonProcessGroup"] is False

    secret = "launchd-secret-0123456789"
    res = cli("gateway", "install", "--port", "19100", "--force", OPENCLAW_GATEWAY_TOKEN=secret)
    assert res.returncode == 0, res.stdout + res.stderr
    raw = plist.read_bytes()
    assert secret.encode() not in raw, "secrets stay in the 0600 env file, not in the plist"
    data = plistlib.loads(raw)
    env_file = state / "service-env" / f"{name}.env"
    assert data["ProgramArguments"][:4] == ["/bin/sh", "-c", 'set -a; . "$0"; set +a; exec "$@"', str(env_file)]
    assert data["ProgramArguments"][4:] == [str(BIN), "gateway", "--port", "19100", *prof]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    shown = subprocess.run(["/bin/sh", "-c", 'set -a; . "$0"; set +a; exec "$@"', str(env_file), "/bin/sh", "-c",
                            'printf %s "$OPENCLAW_GATEWAY_TOKEN"'], capture_output=True, text=True, timeout=10)
    assert shown.stdout == secret, "the wrapper really exports the secret to the gateway"

    status = cli("gateway", "status")
    assert f"Service: {name} (launchd user;" in status.stdout
    stop = cli("gateway", "stop")
    assert stop.returncode == 1 and "No supported service manager detected (launchctl not found)" in stop.stdout
    res = cli("gateway", "uninstall")
    assert res.returncode == 0 and not plist.exists() and not env_file.exists()
