"""Every unit `gateway install` writes passes `systemd-analyze verify` (user + system, default + named profile)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import BIN
from openclaw_sup.systemd import UnitSpec, parse_unit, render_unit

SECRET = "s3cret-token-value-0123456789"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: install the Debian package `systemd` (scripts/test does)"
    return found


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}, "HOME": str(home),
            "OPENCLAW_SUP_UNIT_DIR": str(tmp_path / "units"), "OPENCLAW_SUP_SERVICE_MANAGER": "systemd", **extra}


def _install(env: dict[str, str], *args: str) -> dict[str, object]:
    res = subprocess.run([str(BIN), *args, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def _verify(unit: Path, scope: str, tmp_path: Path) -> None:
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    cmd = [_analyze(), *(["--user"] if scope == "user" else []), "verify", str(unit)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=unit.parent,
                         env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"})
    assert res.returncode == 0 and not res.stderr.strip(), f"{unit.name}:\n{res.stdout}{res.stderr}"


@pytest.mark.parametrize("profile", [None, "work"])
@pytest.mark.parametrize("scope", ["user", "system"])
@pytest.mark.live
def test_generated_units_verify(tmp_path: Path, scope: str, profile: str | None) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    env = _env(tmp_path, OPENCLAW_GATEWAY_TOKEN=SECRET)
    args = [*(["--profile", profile] if profile else []), "gateway", "install", "--port", "18999"]
    if scope == "system":
        args += ["--system", "--user", me]
    out = _install(env, *args)
    unit = Path(str(out["path"]))
    name = f"openclaw-gateway-{profile}.service" if profile else "openclaw-gateway.service"
    assert unit.name == name and out["scope"] == scope
    _verify(unit, scope, tmp_path)

    text = unit.read_text()
    parsed = parse_unit(unit)
    assert SECRET not in text, "secrets never go into the unit"
    assert parsed.value("Service", "Type") == "notify"
    assert parsed.value("Service", "Restart") == "always"
    assert parsed.value("Service", "RestartPreventExitStatus") == "78"
    assert parsed.value("Service", "KillMode") == "mixed"
    assert int(parsed.value("Service", "WatchdogSec") or 0) > 0
    assert int(parsed.value("Service", "TimeoutStopSec") or 0) >= 30
    assert parsed.value("Unit", "StartLimitBurst") and parsed.value("Unit", "StartLimitIntervalSec")
    restart_sec = int(parsed.value("Service", "RestartSec") or 0)
    assert restart_sec == 1, "a dead supervisor is back in about a second"
    assert int(parsed.value("Unit", "StartLimitBurst") or 0) * restart_sec < int(
        parsed.value("Unit", "StartLimitIntervalSec") or 0), "a crash loop still hits the start limit"
    assert int(parsed.value("Service", "LimitNOFILE") or 0) >= 65536
    assert "RestartSteps" not in text and "RestartMaxDelaySec" not in text
    expected_args = [str(BIN), "gateway", "--port", "18999", *(["--profile", profile] if profile else [])]
    assert parsed.exec_start == expected_args
    state = Path(env["HOME"]) / (f".openclaw-{profile}" if profile else ".openclaw")
    assert parsed.environment["OPENCLAW_STATE_DIR"] == str(state)
    assert parsed.environment["OPENCLAW_CONFIG_PATH"] == str(state / "openclaw.json")
    env_file = parsed.environment_files[0]
    assert env_file.parent == state / "service-env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
    assert f'OPENCLAW_GATEWAY_TOKEN="{SECRET}"' in env_file.read_text()
    if scope == "system":
        assert parsed.value("Service", "User") == me
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
            assert parsed.value("Service", key) == value
        assert str(state) in (parsed.value("Service", "ReadWritePaths") or "")
        assert parsed.value("Install", "WantedBy") == "multi-user.target"
    else:
        assert parsed.value("Service", "User") is None and "ProtectSystem" not in text
        assert parsed.value("Install", "WantedBy") == "default.target"


@pytest.mark.live
def test_awkward_paths_are_escaped_and_read_back(tmp_path: Path) -> None:
    """Spaces, `%`, `$` and quotes survive systemd's own parsing (verify) and ours (drift detection)."""
    odd = tmp_path / 'state dir 100% "$HOME"'
    spec = UnitSpec(scope="user", description="OpenClaw Gateway 100%", exec_start=[str(BIN), "gateway", "--port",
                    "18999", "--profile", "a-b"], environment={"OPENCLAW_STATE_DIR": str(odd), "X": "a\\b"},
                    environment_file=odd / "service-env" / "x.env")
    unit = tmp_path / "openclaw-gateway-a-b.service"
    unit.write_text(render_unit(spec))
    _verify(unit, "user", tmp_path)
    parsed = parse_unit(unit)
    assert parsed.exec_start == spec.exec_start
    assert parsed.environment == {"OPENCLAW_STATE_DIR": str(odd), "X": "a\\b"}
    assert parsed.environment_files == [spec.environment_file]
    system = tmp_path / "openclaw-gateway.service"
    system.write_text(render_unit(UnitSpec(
        scope="system", description="d", exec_start=[str(BIN), "gateway"], environment={},
        environment_file=odd / "e.env", user=pwd.getpwuid(os.geteuid()).pw_name, state_directory="openclaw",
        read_write_paths=(odd, tmp_path / "logs"))))
    _verify(system, "system", tmp_path)
    assert "StateDirectory=openclaw" in system.read_text()


@pytest.mark.live
def test_unknown_keys_fail_verification(tmp_path: Path) -> None:
    """The check above is not vacuous: keys systemd 252 does not know show up on stderr."""
    unit = tmp_path / "openclaw-gateway.service"
    unit.write_text(render_unit(UnitSpec(scope="user", description="d", exec_start=[str(BIN), "gateway"],
                                         environment={}, environment_file=tmp_path / "e.env"))
                    .replace("[Install]", "RestartSteps=3\n\n[Install]"))
    with pytest.raises(AssertionError, match="RestartSteps"):
        _verify(unit, "user", tmp_path)
