"""`gateway install|uninstall|start|stop|restart` and the service lines of `gateway status`, on a machine where
systemctl exists but systemd is not running (and on one where systemctl is absent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN

NO_MANAGER = "No supported service manager detected"


def _live_systemd() -> bool:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    for scope in (["--user"], []):
        res = subprocess.run([systemctl, *scope, "is-system-running"], capture_output=True, text=True, timeout=10)
        if res.stdout.strip() not in ("", "offline", "unknown"):
            return True
    return False


pytestmark = [pytest.mark.live,
              pytest.mark.skipif(_live_systemd(), reason="a live systemd would be driven for real by these tests")]


class Cli:
    def __init__(self, tmp_path: Path, **extra: str) -> None:
        self.home = tmp_path / "home"
        self.units = tmp_path / "units"
        self.state = self.home / ".openclaw"
        self.state.mkdir(parents=True)
        self.config = self.state / "openclaw.json"
        self.write_config({"gateway": {"mode": "local", "port": 18990, "auth": {"token": "t" * 32}}})
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")},
                    "HOME": str(self.home), "OPENCLAW_SUP_UNIT_DIR": str(self.units),
                    "OPENCLAW_SUP_SERVICE_MANAGER": "systemd", **extra}

    def write_config(self, cfg: dict[str, object]) -> None:
        self.config.write_text(json.dumps(cfg))
        self.config.chmod(0o600)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], env={**self.env, **env}, capture_output=True, text=True,
                              timeout=60)

    def json(self, *args: str, **env: str) -> tuple[int, dict[str, object]]:
        res = self.run(*args, "--json", **env)
        return res.returncode, json.loads(res.stdout)


def test_install_without_a_running_systemd(tmp_path: Path) -> None:
    cli = Cli(tmp_path, OPENCLAW_GATEWAY_TOKEN="from-the-shell-0123456789")
    res = cli.run("gateway", "install")
    assert res.returncode == 0, res.stdout + res.stderr
    assert NO_MANAGER in res.stdout and "is-system-running" in res.stdout
    assert f"{BIN} gateway --port 18990" in res.stdout, "the manual command to run the gateway is given"
    unit = cli.units / "openclaw-gateway.service"
    env_file = cli.state / "service-env" / "openclaw-gateway.env"
    assert unit.is_file() and env_file.is_file()
    assert "from-the-shell" not in unit.read_text() and "from-the-shell" in env_file.read_text()

    code, again = cli.json("gateway", "install")
    assert code == 0 and again["result"] == "unchanged" and again["serviceManager"]["available"] is False

    before = unit.read_bytes()
    differs = cli.run("gateway", "install", "--port", "18991")
    assert differs.returncode == 1 and "--force" in differs.stdout
    assert unit.read_bytes() == before, "a differing unit is left alone without --force"
    code, forced = cli.json("gateway", "install", "--port", "18991", "--force")
    assert code == 0 and forced["result"] == "updated" and "--port 18991" in unit.read_text()

    for action in ("start", "stop", "restart"):
        res = cli.run("gateway", action)
        assert res.returncode == 1, (action, res.stdout, res.stderr)
        assert NO_MANAGER in res.stdout and f"{BIN} gateway --port 18991" in res.stdout

    code, gone = cli.json("gateway", "uninstall")
    assert code == 0 and set(gone["removed"]) == {str(unit), str(env_file)}
    assert not unit.exists() and not env_file.exists()
    assert cli.run("gateway", "uninstall").returncode == 0
    assert cli.run("gateway", "stop").returncode == 0, "stopping a service that is not installed succeeds"
    start = cli.run("gateway", "start")
    assert start.returncode == 1 and "not installed" in start.stdout


def test_systemctl_absent(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    path_without_systemctl = str(BIN.parent)
    assert shutil.which("systemctl", path=path_without_systemctl) is None
    res = cli.run("--profile", "work", "gateway", "install", "--system", PATH=path_without_systemctl)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{NO_MANAGER} (systemctl not found)" in res.stdout
    assert (cli.units / "openclaw-gateway-work.service").is_file()
    status = cli.run("--profile", "work", "gateway", "status", PATH=path_without_systemctl)
    assert "Service: openclaw-gateway-work.service (systemd system;" in status.stdout
    assert "no supported service manager detected: systemctl not found" in status.stdout
    restart = cli.run("--profile", "work", "gateway", "restart", PATH=path_without_systemctl)
    assert restart.returncode == 1 and NO_MANAGER in restart.stdout
    res = cli.run("--profile", "work", "gateway", "uninstall", "--system", PATH=path_without_systemctl)
    assert res.returncode == 0 and not (cli.units / "openclaw-gateway-work.service").exists()


def test_status_reports_service_config_and_drift(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    plain = cli.run("gateway", "status")
    assert "Service: not installed (openclaw-gateway.service; systemd)" in plain.stdout
    assert f"Config (cli): {cli.config} (valid)" in plain.stdout and "Config (service)" not in plain.stdout

    assert cli.run("gateway", "install").returncode == 0
    res = cli.run("gateway", "status")
    assert "Service: openclaw-gateway.service (systemd user;" in res.stdout
    assert "no supported service manager detected" in res.stdout
    assert f"Config (service): {cli.config} (valid)" in res.stdout
    assert "Warning" not in res.stdout

    cli.write_config({"gateway": {"mode": "local", "port": 18995, "auth": {"token": "t" * 32}}})
    res = cli.run("gateway", "status")
    assert "Gateway service port does not match current gateway config (service 18990, config 18995)" in res.stdout
    data = json.loads(cli.run("gateway", "status", "--json").stdout)
    assert data["service"]["port"] == 18990 and data["service"]["installed"] is True
    assert [w["code"] for w in data["warnings"]] == ["port-drift"]

    other = tmp_path / "elsewhere"
    res = cli.run("gateway", "status", OPENCLAW_STATE_DIR=str(other))
    assert f"Config (cli): {other / 'openclaw.json'} (missing)" in res.stdout
    assert f"Config (service): {cli.config} (valid)" in res.stdout
    assert "Config (service) differs from Config (cli)" in res.stdout

    cli.write_config({"gateway": {"mode": "local", "port": 18990, "auth": {"token": "t" * 32}, "bogus": 1}})
    res = cli.run("gateway", "status")
    assert f"Config (service): {cli.config} (invalid: gateway.bogus" in res.stdout


def test_system_unit_for_the_current_user_keeps_the_cli_paths(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    state = tmp_path / "custom-state"
    code, out = cli.json("gateway", "install", "--system", OPENCLAW_STATE_DIR=str(state))
    assert code == 0 and out["scope"] == "system" and out["configPath"] == str(state / "openclaw.json")
    text = (cli.units / "openclaw-gateway.service").read_text()
    assert f"Environment=OPENCLAW_STATE_DIR={state}" in text and f"ReadWritePaths=-{state}" in text
    assert cli.run("gateway", "install", "--user", "root").returncode == 1, "--user needs --system"
    missing = cli.run("gateway", "install", "--system", "--user", "no-such-user-openclaw")
    assert missing.returncode == 1 and "no such user" in missing.stderr
