"""The dashboard in a real browser (Playwright driving Debian's Chromium, headless) against a real gateway.

Sign-in with the token, the workers table against `openclaw-sup status --json`, a worker SIGKILLed from outside
and one restarted from the UI, DM pairing approved from the UI (a real ngircd), a chat reply streamed from the
echo model, a wrong secret (`unauthorized`, no reconnect loop), a paired browser reconnecting with no secret,
reconnection after a restart and an outage, the insecure-context message (a private network namespace), and
upstream's own built UI completing its handshake against us. Screenshots of each view are written to
`artifacts/control-ui/` (not committed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channel_servers import NGIRCD, IrcClient, Ngircd
from test_agent_live import SlowModel

from conftest import REPO, Gateway
from openclaw_sup.config.pairing_store import APPROVED_NOTICE
from openclaw_sup.gateway.client import GatewayClient

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (pyproject.toml)")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed "
                                                                    "(scripts/debian-packages.txt)")

TOKEN = "browser-ui-token-0123456789abcdef"
ARTIFACTS = REPO / "artifacts" / "control-ui"
UPSTREAM_UI = Path(os.environ.get("OPENCLAW_CLI") or Path.home() / ".cache/openclaw-sup/oc/node_modules/.bin/openclaw"
                   ).resolve().parent / "dist" / "control-ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 860})
    yield ctx
    ctx.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def make_gateway(factory: Any, config: dict[str, Any] | None = None, **kw: Any) -> Gateway:
    cfg: dict[str, Any] = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
                           "agents": {"defaults": {"model": "echo/echo"}}, **(config or {})}
    return factory({"kinds": [], "restart": {"stableAfterMs": 200}}, config=cfg,
                   extra_env={"OPENCLAW_SKIP_CRON": ""}, **kw)


def until(page: Any, script: str, arg: Any = None, timeout: float = 10.0) -> Any:
    """Poll a JS function in the page (through CDP, which the page's strict CSP allows; Playwright's
    `wait_for_function` evaluates strings inside the page and is refused by that CSP)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {script}")
        time.sleep(0.05)


def sign_in(page: Any, gw: Gateway, secret: str = TOKEN, path: str = "/") -> None:
    page.goto(f"http://127.0.0.1:{gw.port}{path}")
    page.fill("#gateway-secret", secret)
    page.click("#login button[type=submit]")


def connected(page: Any) -> None:
    until(page, "() => document.getElementById('connection-status').textContent === 'connected'", timeout=15)


def ui_rows(page: Any) -> dict[str, dict[str, str]]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#workers-table tr.worker')]
        .map(tr => [tr.dataset.worker, {pid: tr.querySelector('.pid').textContent,
                                        state: tr.querySelector('.badge').textContent,
                                        restarts: tr.querySelector('.restarts').textContent,
                                        kind: tr.children[1].textContent}]))""")


def test_sign_in_workers_match_status_kill_and_restart(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory).start()
    page = context.new_page()
    sign_in(page, gw)
    connected(page)
    page.wait_for_selector("#workers-table tr.worker")
    status = json.loads(gw.run_cli("status", "--json").stdout)
    expected = {w["name"]: {"pid": str(w["pid"]), "state": w["state"], "restarts": str(w["restarts"]),
                            "kind": w["kind"]} for w in status["workers"]}
    assert ui_rows(page) == expected
    assert page.inner_text("#supervisor-line").startswith("supervisor")
    assert f"pid {status['supervisor']['pid']}" in page.inner_text("#supervisor-line")
    assert page.evaluate("Object.values(sessionStorage)") == [TOKEN]  # token mode: this tab only
    assert page.evaluate("Object.values(localStorage)") == []

    old = gw.worker("agent")["pid"]
    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()
    until(page, """old => { const tr = document.querySelector('#workers-table tr[data-worker="agent"]');
                    return tr && /^[0-9]+$/.test(tr.querySelector('.pid').textContent)
                      && tr.querySelector('.pid').textContent !== String(old)
                      && tr.querySelector('.restarts').textContent === '1'; }""", old, timeout=2)
    seen_after = time.monotonic() - killed_at
    assert ui_rows(page)["agent"]["pid"] == str(gw.worker("agent")["pid"])
    print(f"restart shown {seen_after:.2f}s after the SIGKILL")

    before = gw.worker("scheduler")["pid"]
    page.click('#workers-table tr[data-worker="scheduler"] button.act-restart')
    until(page, """old => { const tr = document.querySelector('#workers-table tr[data-worker="scheduler"]');
                    return tr && tr.querySelector('.badge').textContent === 'running'
                      && /^[0-9]+$/.test(tr.querySelector('.pid').textContent)
                      && tr.querySelector('.pid').textContent !== String(old); }""", before, timeout=15)
    assert gw.worker("scheduler")["pid"] != before
    assert ui_rows(page)["scheduler"]["pid"] == str(gw.worker("scheduler")["pid"])
    # a second RSS/CPU sample (one per 10 s), so the sparklines have a line to draw
    until(page, "() => document.querySelectorAll('#workers-table svg.spark polyline').length >= 2", timeout=20)
    shot(page, "workers")


def test_failed_worker_stands_out_with_its_stderr(gateway_factory, context: Any, tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    fault.write_text("database file is locked")
    gw = gateway_factory({"kinds": ["sup_test_kinds"],
                          "restart": {"crashLoopMax": 2, "crashLoopWindowMs": 60_000, "failedRetryMs": 600_000},
                          "workers": {"flaky": {"kind": "crasher", "options": {"faultFile": str(fault)}}}},
                         config={"gateway": {"auth": {"mode": "token", "token": TOKEN}}})
    gw.start(wait_running=False)
    gw.wait_state("flaky", "failed", 20)
    page = context.new_page()
    sign_in(page, gw)
    connected(page)
    page.wait_for_selector('#workers-table tr.unhealthy[data-worker="flaky"]')
    assert "crasher: fatal: database file is locked" in page.inner_text("#workers-table tr.stderr-row")
    shot(page, "workers-failed")
    fault.unlink()
    page.click('#workers-table tr[data-worker="flaky"] button.act-start')
    page.wait_for_selector('#workers-table tr.state-running[data-worker="flaky"]', timeout=15_000)
    assert not page.query_selector("#workers-table tr.stderr-row")


def test_an_idle_on_demand_worker_says_so_and_start_starts_it(gateway_factory, context: Any) -> None:
    gw = gateway_factory({"kinds": [], "onDemand": ["browser"]}, config={"gateway": {"auth": {"mode": "token",
                                                                                          "token": TOKEN}}})
    gw.start()
    page = context.new_page()
    sign_in(page, gw)
    connected(page)
    row = '#workers-table tr.state-idle[data-worker="browser"]'
    page.wait_for_selector(row)
    assert ui_rows(page)["browser"] == {"pid": "\u2013", "state": "idle", "restarts": "0", "kind": "browser"}
    assert "starts on first use" in page.inner_text(row) and not page.query_selector(f"{row}.unhealthy")
    page.click(f"{row} button.act-start")
    page.wait_for_selector('#workers-table tr.state-running[data-worker="browser"]', timeout=15_000)
    assert ui_rows(page)["browser"]["pid"] == str(gw.worker("browser")["pid"])


def test_wrong_secret_says_unauthorized_and_does_not_loop(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory).start()
    page = context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_in(page, gw, secret="not-the-token")
    until(page, "() => document.getElementById('login-error')?.textContent.includes('unauthorized')")
    page.wait_for_timeout(10_000)  # (not time.sleep: Playwright delivers events only while it is called)
    assert len(sockets) <= 2, sockets
    assert "unauthorized: gateway token mismatch" in page.inner_text("#login-error")
    assert page.is_visible("#gateway-secret")
    assert page.evaluate("Object.values(sessionStorage)") == []
    shot(page, "login-unauthorized")


def test_paired_browser_reconnects_with_no_secret(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory).start()
    first = context.new_page()
    sign_in(first, gw)
    connected(first)
    first.close()
    second = context.new_page()  # a new tab: its sessionStorage is empty, the device token is in IndexedDB
    assert second.evaluate("Object.values(sessionStorage)") == [] if second.url != "about:blank" else True
    second.goto(f"http://127.0.0.1:{gw.port}/")
    connected(second)
    assert second.evaluate("Object.values(sessionStorage)") == []
    assert not second.is_visible("#gateway-secret")
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    ui = [p for p in c.request("system-presence") if p.get("deviceId") and p.get("mode") == "ui"]
    c.close()
    assert ui, "the browser's device is not in presence"

    second.click("button.link")  # sign out: the secret and the device token are forgotten
    second.wait_for_selector("#gateway-secret")
    second.goto(f"http://127.0.0.1:{gw.port}/")
    second.wait_for_selector("#gateway-secret")


def test_password_stays_in_memory(gateway_factory, context: Any) -> None:
    password = "browser-ui-password-42"
    gw = gateway_factory({"kinds": []}, config={"gateway": {"auth": {"mode": "password", "password": password}}})
    gw.start()
    page = context.new_page()
    sign_in(page, gw, secret=password)
    connected(page)
    stored = page.evaluate("JSON.stringify([Object.values(sessionStorage), Object.values(localStorage)])")
    assert password not in stored


def test_reconnects_after_a_restart_and_an_outage(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory).start()
    page = context.new_page()
    sign_in(page, gw)
    connected(page)
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    c.request("gateway.restart.request", {"reason": "dashboard test"})
    c.close()
    until(page, "() => document.getElementById('connection-status').textContent === 'gateway restarting'")
    connected(page)

    gw.stop()
    until(page, "() => document.getElementById('banner').textContent.includes('Gateway unreachable')")
    assert "retrying in" in page.inner_text("#banner")
    shot(page, "banner-unreachable")
    gw.start()
    connected(page)  # with the device token: no secret asked again
    assert not page.is_visible("#gateway-secret")


def test_chat_streams_a_reply_from_the_echo_model(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory).start()
    page = context.new_page()
    deltas: list[str] = []

    def watch(ws: Any) -> None:
        ws.on("framereceived", lambda frame: deltas.append(frame) if '"state":"delta"' in str(frame) else None)

    page.on("websocket", watch)
    sign_in(page, gw, path="/chat")
    connected(page)
    text = "the quick brown fox jumps over the lazy dog"
    page.fill("#chat-input", text)
    page.click("#chat-send")
    until(page, """t => { const m = [...document.querySelectorAll('#chat-log .msg-assistant')];
        return m.length && m[m.length - 1].querySelector('.text').textContent === t
          && !m[m.length - 1].classList.contains('streaming'); }""", text, timeout=15)
    assert len(deltas) == len(text.split())  # one streamed chunk per word
    shot(page, "chat")
    page.reload()
    until(page, "() => document.querySelectorAll('#chat-log .msg').length >= 2")


def test_chat_abort_from_the_ui(gateway_factory, context: Any) -> None:
    model = SlowModel()  # streams one chunk, then holds the run open
    try:
        gw = make_gateway(gateway_factory, {
            "agents": {"defaults": {"model": "slow/m1"}},
            "models": {"providers": {"slow": {"baseUrl": f"http://127.0.0.1:{model.port}/v1",
                                              "api": "openai-completions"}}}}).start()
        page = context.new_page()
        sign_in(page, gw, path="/chat")
        connected(page)
        page.fill("#chat-input", "take your time")
        page.click("#chat-send")
        until(page, "() => document.querySelector('#chat-log .msg-assistant.streaming .text')?.textContent"
                    " === 'thinking '", timeout=15)
        assert page.is_enabled("#chat-abort")
        page.click("#chat-abort")
        until(page, "() => document.querySelector('#chat-log .msg-assistant.aborted')")
        assert not page.is_enabled("#chat-abort") and page.is_enabled("#chat-send")
    finally:
        model.close()


def test_logs_cron_and_config_views(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory).start()
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    job = c.request("cron.add", {"name": "nightly report", "schedule": {"kind": "cron", "expr": "0 3 * * *"},
                                 "sessionTarget": "main", "payload": {"kind": "systemEvent", "text": "report"}})
    c.close()
    page = context.new_page()
    sign_in(page, gw, path="/logs")
    connected(page)
    until(page, "() => [...document.querySelectorAll('#log-lines .log-line')]"
                ".some(l => l.textContent.includes('gateway listening'))")
    page.fill("#log-text", "worker agent ready")
    lines = page.eval_on_selector_all("#log-lines .log-line", "ls => ls.map(l => l.textContent)")
    assert lines and all("worker agent ready" in line for line in lines)
    page.fill("#log-text", "")
    page.click("#log-pause")
    assert page.inner_text("#log-pause") == "Resume"
    shot(page, "logs")

    page.click("nav a[data-view=cron]")
    row = f'#cron-table tr[data-job="{job["id"]}"]'
    page.wait_for_selector(row)
    page.click(f"{row} button.act-run")
    until(page, "r => document.querySelector(r)?.textContent.includes('ok')", row, timeout=15)
    page.click(f"{row} button.act-history")
    page.wait_for_selector("#cron-table tr.history-row .badge")
    page.click(f"{row} button.act-toggle")
    until(page, "r => document.querySelector(r)?.classList.contains('disabled')", row)
    shot(page, "cron")

    page.click("nav a[data-view=config]")
    page.wait_for_selector("#config-json")
    assert TOKEN not in page.inner_text("#config-json")
    cfg_path = gw.state_dir / "openclaw.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["agents"]["defaults"]["timeoutSeconds"] = 120
    cfg_path.write_text(json.dumps(cfg))
    until(page, "() => document.getElementById('plan-respawn')?.textContent === 'agent'", timeout=15)
    assert page.inner_text("#plan-keep") == "scheduler, browser"
    shot(page, "config")


@pytest.mark.skipif(not Path(NGIRCD).exists(), reason="ngircd not installed (scripts/debian-packages.txt)")
def test_pairing_request_approved_from_the_ui_and_sender_answered(gateway_factory, context: Any,
                                                                   tmp_path: Path) -> None:
    ircd = Ngircd(tmp_path / "ngircd").start()
    try:
        gw = make_gateway(gateway_factory, {"channels": {"irc": {"host": "127.0.0.1", "port": ircd.port,
                                                                 "nick": "clawbot"}}}).start()
        page = context.new_page()
        sign_in(page, gw, path="/channels")
        connected(page)
        until(page, "() => document.querySelector('#channels-table tbody tr td:nth-child(6)')?.textContent"
                    " === 'connected'", timeout=20)
        alice = IrcClient(ircd.port, "alice")
        alice.privmsg("clawbot", "hello bot")
        alice.expect(lambda ln: "Pairing code:" in ln, what="a pairing code")
        page.wait_for_selector('#pairing-table tr[data-sender="alice"]', timeout=10_000)
        shot(page, "channels")
        page.click('#pairing-table tr[data-sender="alice"] button.act-approve')
        alice.expect(lambda ln: ln.startswith(":clawbot!") and APPROVED_NOTICE in ln, 20, what="the approval notice")
        until(page, "() => !document.querySelector('#pairing-table tr[data-sender=\"alice\"]')")
        alice.privmsg("clawbot", "are you there?")
        alice.expect(lambda ln: ln.startswith(":clawbot!") and ln.endswith("PRIVMSG alice :are you there?"), 20,
                     what="the agent's answer to the approved sender")
        alice.close()
    finally:
        ircd.kill()


@pytest.mark.live
def test_insecure_context_says_device_identity_required(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip (iproute2) for a private network namespace")
    host = "10.213.0.1"
    shot_path = ARTIFACTS / "insecure-context.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "kinds")])}
    script = (f"ip link set lo up && ip addr add {host}/32 dev lo && exec {sys.executable} "
              f"{REPO / 'tests' / 'insecure_context_probe.py'} {tmp_path / 'gw'} {host} {shot_path}")
    out = subprocess.run(["unshare", "--net", "--fork", "sh", "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["secure"] is False
    assert seen["title"] == "device identity required"
    assert "ssh -N -L" in seen["text"] and "127.0.0.1" in seen["text"] and "HTTPS" in seen["text"]
    assert seen["sockets"] == []  # nothing is sent without a device identity
    assert seen["status"] == "device identity required"


@pytest.mark.skipif(not (UPSTREAM_UI / "index.html").exists(),
                    reason=f"upstream's built Control UI is not installed at {UPSTREAM_UI} "
                           "(scripts/install-openclaw-cli installs the npm package)")
def test_upstream_built_ui_completes_its_handshake(gateway_factory, context: Any) -> None:
    gw = make_gateway(gateway_factory, {"gateway": {"auth": {"mode": "token", "token": TOKEN},
                                                    "controlUi": {"root": str(UPSTREAM_UI)}}}).start()
    page = context.new_page()
    hellos: list[str] = []
    errors: list[str] = []

    def watch(ws: Any) -> None:
        def frame(payload: Any) -> None:
            text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
            if '"hello-ok"' in text:
                hellos.append(text)
            elif '"ok":false' in text:
                errors.append(text)

        ws.on("framereceived", frame)

    page.on("websocket", watch)
    page.goto(f"http://127.0.0.1:{gw.port}/#token={TOKEN}")
    deadline = time.monotonic() + 30
    while not (hellos or errors) and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # Playwright delivers frame events only while it is called
    assert hellos, errors
    hello = json.loads(hellos[0])["payload"]
    assert hello["type"] == "hello-ok" and "operator.admin" in hello["auth"]["scopes"]
    page.wait_for_timeout(3000)
    shot(page, "upstream-ui")
    assert not re.search(r"unauthorized|protocol mismatch", page.inner_text("body"), re.I)
