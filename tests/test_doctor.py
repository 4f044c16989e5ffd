"""`openclaw-sup doctor`: real files, real processes, real sockets; `--fix` repairs only the safe part."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, free_port

pytestmark = pytest.mark.live


class Home:
    def __init__(self, tmp_path: Path, cfg: dict[str, Any] | None = None, mode: int = 0o600) -> None:
        self.home = tmp_path / "home"
        self.state = self.home / ".openclaw"
        self.run_dir = self.state / "run"
        self.run_dir.mkdir(parents=True, mode=0o700)
        self.state.chmod(0o700)
        self.config = self.state / "openclaw.json"
        if cfg is not None:
            self.config.write_text(json.dumps(cfg))
            self.config.chmod(mode)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")},
                    "HOME": str(self.home), "OPENCLAW_SUP_UNIT_DIR": str(tmp_path / "units"),
                    "OPENCLAW_SUP_SERVICE_MANAGER": "systemd"}

    def doctor(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), "doctor", *args], env=self.env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    def findings(self, *args: str) -> tuple[bool, dict[str, dict[str, Any]]]:
        res = self.doctor("--json", *args)
        assert res.returncode == 0, res.stdout + res.stderr
        data = json.loads(res.stdout)
        return data["ok"], {f"{f['checkId']} {f.get('path', '')}": f for f in data["findings"]}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_fix_repairs_permissions_missing_token_and_stale_lock(tmp_path: Path) -> None:
    h = Home(tmp_path, {"gateway": {"mode": "local", "port": free_port(), "auth": {"mode": "token"}}}, mode=0o644)
    lock = h.run_dir / "gateway.lock"
    lock.write_text(f"{_dead_pid()}\n")
    (h.run_dir / "ctl.sock").touch()

    ok, found = h.findings()
    perm = found[f"core/doctor/config-permissions {h.config}"]
    assert perm["severity"] == "warning" and "0644" in perm["message"] and perm["fixed"] is False
    token = found["core/doctor/gateway-auth gateway.auth.token"]
    assert token["fixHint"] and token["fixed"] is False
    stale = found[f"core/doctor/stale-lock {lock}"]
    assert "is not running" in stale["message"]
    assert f"core/doctor/stale-socket {h.run_dir / 'ctl.sock'}" in found
    assert ok is True, "warnings only: nothing here stops the CLI from reporting ok"

    text = h.doctor()
    assert f"  [warning] core/doctor/config-permissions {h.config} - config file is readable by others" in text.stdout
    assert "    fix: chmod 600" in text.stdout

    res = h.doctor("--fix", "--non-interactive")
    assert f"fixed: chmod 600 {h.config}" in res.stdout
    assert "fixed: generated gateway.auth.token" in res.stdout
    assert f"fixed: removed {lock}" in res.stdout
    assert stat.S_IMODE(h.config.stat().st_mode) == 0o600
    cfg = json.loads(h.config.read_text())
    assert len(cfg["gateway"]["auth"]["token"]) >= 43 and cfg["gateway"]["mode"] == "local"
    assert not lock.exists() and not (h.run_dir / "ctl.sock").exists()

    _, after = h.findings()
    assert not [k for k in after if any(c in k for c in ("config-permissions", "gateway-auth", "stale-"))], after


def test_gateway_mode_is_written_only_when_agreed(tmp_path: Path) -> None:
    h = Home(tmp_path, {"gateway": {"port": free_port(), "auth": {"token": "t" * 32}}})
    res = h.doctor()
    assert ("  [warning] core/doctor/gateway-config gateway.mode - gateway.mode is unset; gateway start will be "
            "blocked.") in res.stdout
    res = h.doctor("--fix", "--non-interactive")
    assert "left unchanged" in res.stdout and "mode" not in json.loads(h.config.read_text())["gateway"]
    res = h.doctor("--fix", "--non-interactive", "--yes")
    assert "mode" not in json.loads(h.config.read_text())["gateway"], "--non-interactive wins over --yes"
    res = h.doctor("--fix", "--yes")
    assert "fixed: set gateway.mode=local" in res.stdout
    assert json.loads(h.config.read_text())["gateway"]["mode"] == "local"


def test_errors_set_the_exit_status(tmp_path: Path) -> None:
    h = Home(tmp_path, {
        "gateway": {"mode": "local", "port": free_port(), "auth": {"token": "t" * 32}},
        "browser": {"executablePath": str(tmp_path / "no-such-chrome")},
        "channels": {"telegram": {"accounts": {"main": {}}}, "irc": {"host": "irc.example.net"}},
    })
    res = h.doctor()
    assert res.returncode == 1
    assert "[error] core/doctor/browser browser.executablePath - browser.executablePath not found" in res.stdout
    ok, found = h.findings()
    assert ok is False
    assert found["core/doctor/channels channels.telegram.accounts.main.botToken"]["severity"] == "error"
    assert "needs nick" in found["core/doctor/channels channels.irc.nick"]["message"]
    h.config.write_text(json.dumps({"gateway": {"mode": "local", "port": free_port(), "auth": {"token": "t" * 32},
                                                "portt": 1}}))
    ok, found = h.findings()
    assert ok is False and found["core/doctor/config-schema gateway.portt"]["severity"] == "error"


def test_port_held_by_another_process(tmp_path: Path) -> None:
    port = free_port()
    h = Home(tmp_path, {"gateway": {"mode": "local", "port": port, "auth": {"token": "t" * 32}}})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('up', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        ok, found = h.findings()
        finding = found["core/doctor/port gateway.port"]
        assert finding["severity"] == "error" and f"pid {holder.pid}" in finding["message"]
        assert ok is False
    finally:
        holder.kill()
        holder.wait()


def test_live_gateway_is_not_stale(gateway_factory) -> None:
    gw = gateway_factory({}, config={"gateway": {"auth": {"token": "t" * 32}}}).start()
    env = {**gw.env, "OPENCLAW_SUP_UNIT_DIR": str(gw.root / "units"), "OPENCLAW_SUP_SERVICE_MANAGER": "systemd"}
    res = subprocess.run([str(BIN), "doctor", "--json"], env=env, capture_output=True, text=True, timeout=60)
    findings = json.loads(res.stdout)["findings"]
    assert not [f for f in findings if f["checkId"].startswith("core/doctor/stale-")], findings
    port = [f for f in findings if f["checkId"] == "core/doctor/port"]
    pid = gw.status()["supervisor"]["pid"]
    assert port and port[0]["severity"] == "info" and f"this profile's gateway (pid {pid})" in port[0]["message"]
