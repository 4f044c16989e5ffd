"""The real `openclaw` CLI (npm openclaw@2026.9.6 on Node 24) against our gateway.

`scripts/test` installs it outside the repo (scripts/install-openclaw-cli) and exports OPENCLAW_CLI.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import Gateway, openclaw_cli, run_openclaw

TOKEN = "conformance-token-0123456789"


@pytest.fixture(scope="module")
def openclaw_bin() -> Path:
    return openclaw_cli()


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}}
    return gateway_factory({"workers": {"ticker": {"kind": "sleeper"}}}, config=cfg).start()


def run_cli(openclaw_bin: Path, gw: Gateway, *args: str, env_url: bool = False) -> subprocess.CompletedProcess[str]:
    return run_openclaw(gw, *args, token=TOKEN if env_url else None)


def url_args(gw: Gateway, token: str = TOKEN) -> list[str]:
    return ["--url", f"ws://127.0.0.1:{gw.port}", "--token", token]


def test_gateway_status_require_rpc(openclaw_bin: Path, gw: Gateway) -> None:
    res = run_cli(openclaw_bin, gw, "gateway", "status", "--require-rpc", *url_args(gw))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Read probe: ok" in res.stdout
    assert "Gateway version: 2026.9.6" in res.stdout
    bad = run_cli(openclaw_bin, gw, "gateway", "status", "--require-rpc", *url_args(gw, "wrong-token"))
    assert bad.returncode != 0


def test_health_json_is_our_payload(openclaw_bin: Path, gw: Gateway) -> None:
    res = run_cli(openclaw_bin, gw, "health", "--json", env_url=True)
    assert res.returncode == 0, res.stdout + res.stderr
    payload = json.loads(res.stdout)
    assert payload["ok"] is True
    assert [w["name"] for w in payload["workers"]] == ["agent", "browser", "ticker"]
    assert next(w for w in payload["workers"] if w["name"] == "ticker")["pid"] == gw.worker("ticker")["pid"]


def test_gateway_call_health(openclaw_bin: Path, gw: Gateway) -> None:
    res = run_cli(openclaw_bin, gw, "gateway", "call", "health", *url_args(gw))
    assert res.returncode == 0, res.stdout + res.stderr
    body = res.stdout[res.stdout.index("{"):]
    assert json.loads(body)["workers"][0]["state"] == "running"


def test_logs_prints_our_lines(openclaw_bin: Path, gw: Gateway) -> None:
    res = run_cli(openclaw_bin, gw, "logs", "--limit", "20", *url_args(gw))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"worker ticker ready (pid {gw.worker('ticker')['pid']}" in res.stdout
    assert "sleeper ticker up" in res.stdout
