"""`openclaw-sup models auth paste-token` / `models status`, and a pasted token reaching the provider (a loopback
server following the Anthropic Messages wire format) through a running gateway without appearing in any log,
status or config output. Also the `--dev` profile's default model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_servers import ThreadedServer
from aiohttp import web

from conftest import BIN, Gateway
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.supervisor.main import write_dev_config

pytestmark = pytest.mark.live

TOKEN = "gw-token-for-models-tests-0123"
SECRET = "sk-ant-api03-very-secret-value-9876543210"


def cli(home: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(BIN), *args], input=stdin, capture_output=True, text=True, timeout=30,
                          env={**base, **(env or {})})


def test_paste_token_writes_a_private_file_and_status_never_shows_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    state = home / ".openclaw"
    state.mkdir()
    (state / "openclaw.json").write_text(json.dumps({"gateway": {"mode": "local"},
                                                     "agents": {"defaults": {"model": "anthropic/claude-x"}}}))
    before = cli(home, "models", "status", "--json")
    assert before.returncode == 0, before.stderr
    report = json.loads(before.stdout)
    assert report["resolvedDefault"] == "anthropic/claude-x" and report["ok"] is False
    assert report["auth"]["missingProvidersInUse"] == ["anthropic"]
    assert "models auth paste-token --provider anthropic" in " ".join(report["problems"])
    assert cli(home, "models", "status", "--check").returncode == 1

    res = cli(home, "models", "auth", "paste-token", "--provider", "anthropic", stdin=SECRET + "\n")
    assert res.returncode == 0, res.stderr
    assert "anthropic:manual" in res.stdout and SECRET not in res.stdout + res.stderr
    path = state / "agents" / "main" / "agent" / "auth-profiles.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["profiles"]["anthropic:manual"] == {
        "type": "token", "provider": "anthropic", "token": SECRET}

    text = cli(home, "models", "status")
    assert text.returncode == 0, text.stderr
    assert "Default       : anthropic/claude-x" in text.stdout
    assert "- anthropic (in use): auth-profiles:anthropic:manual" in text.stdout
    as_json = cli(home, "models", "status", "--json", "--check")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True
    for out in (text, as_json):
        assert SECRET not in out.stdout + out.stderr and SECRET[-8:] not in out.stdout

    empty = cli(home, "models", "auth", "paste-token", "--provider", "openai", stdin="\n")
    assert empty.returncode == 1 and "no token given" in empty.stderr
    env_only = cli(home, "models", "status", "--json", env={"ANTHROPIC_API_KEY": "sk-from-env-123"})
    assert "sk-from-env-123" not in env_only.stdout


def test_status_for_the_offline_echo_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    (home / ".openclaw" / "openclaw.json").write_text(json.dumps(
        {"agents": {"defaults": {"model": {"primary": "echo/echo", "fallbacks": ["ollama/llama3"]}}}}))
    res = cli(home, "models", "status")
    assert res.returncode == 0, res.stderr
    assert "Default       : echo/echo" in res.stdout and "Fallbacks (1) : ollama/llama3" in res.stdout
    assert "- echo (in use): not needed" in res.stdout and "- ollama (in use): not needed" in res.stdout


def test_dev_profile_defaults_to_the_echo_model(tmp_path: Path) -> None:
    paths = ProfilePaths("dev", tmp_path / ".openclaw-dev", tmp_path / ".openclaw-dev" / "openclaw.json", dev=True)
    write_dev_config(paths)
    cfg = json.loads(paths.config_path.read_text())
    assert cfg["agents"]["defaults"]["model"] == "echo/echo"
    assert cfg["gateway"]["mode"] == "local" and cfg["gateway"]["auth"]["token"]
    res = cli(tmp_path, "models", "status", "--json", env={"OPENCLAW_STATE_DIR": str(paths.state_dir),
                                                           "OPENCLAW_CONFIG_PATH": str(paths.config_path)})
    assert json.loads(res.stdout)["ok"] is True


def test_pasted_token_reaches_the_provider_and_no_output_shows_it(gateway_factory) -> None:
    seen: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in (
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
                "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "hi from claude"}}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": 3}}),
            ("message_stop", {"type": "message_stop"}),
        ):
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        return resp

    server = ThreadedServer({"/v1/messages": messages})
    try:
        g: Gateway = gateway_factory({}, config={
            "gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}},
            "agents": {"defaults": {"model": "anthropic/claude-x"}},
            "models": {"providers": {"anthropic": {"baseUrl": f"http://127.0.0.1:{server.port}"}}}},
            extra_env={"ANTHROPIC_API_KEY": ""}).start()
        c = GatewayClient(f"ws://127.0.0.1:{g.port}", token=TOKEN, timeout=20)
        c.connect()
        missing = c.request("agent", {"message": "hello", "idempotencyKey": "before-token"}, expect_final=True)
        assert missing["status"] == "error" and "paste-token --provider anthropic" in missing["summary"]
        pasted = subprocess.run([str(BIN), "models", "auth", "paste-token", "--provider", "anthropic"],
                                input=SECRET, env=g.env, capture_output=True, text=True, timeout=30)
        assert pasted.returncode == 0, pasted.stderr
        final = c.request("agent", {"message": "hello", "idempotencyKey": "after-token"}, expect_final=True)
        assert final["status"] == "ok" and final["result"]["payloads"] == [{"text": "hi from claude"}]
        assert seen[-1]["headers"]["x-api-key"] == SECRET
        assert seen[-1]["body"]["model"] == "claude-x"
        outputs = [g.log_text(), (g.root / "stdout.txt").read_text(), json.dumps(g.status()),
                   json.dumps(c.request("config.get", {})), json.dumps(c.request("health", {})),
                   g.run_cli("models", "status", "--json").stdout, g.run_cli("models", "status").stdout,
                   json.dumps(c.events)]
        for out in outputs:
            assert SECRET not in out
        c.close()
    finally:
        server.close()
