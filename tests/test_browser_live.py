"""The browser worker inside a real gateway, driving Debian's real Chromium over CDP.

One gateway (and one Chromium) is shared by the tests of this module, in order: start, open a loopback page,
tabs, screenshot, a SIGKILLed Chromium restarted, a SIGKILLed worker leaving nothing behind, the CLI, attach-only
and the documented errors. Tests that need another config get their own gateway.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import psutil
import pytest

from conftest import Gateway, free_port, page_served, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient, GatewayError, WebSocket

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is missing (scripts/test installs it)")]

TOKEN = "browser-token-0123456789abcdef"
PAGE = b"<html><head><title>openclaw-sup test page</title></head><body style='background:#0a0'>hi</body></html>"
ROOT = os.geteuid() == 0


def base_port(span: int = 300) -> int:
    """A gateway port whose derived CDP range (port + 11 ..) and the next gateway's (+ 200) are free."""
    for _ in range(50):
        port = free_port()
        if port + span < 65000 and all(_free(p) for p in (port, port + 11, port + 200, port + 211)):
            return port
    raise AssertionError("no free port block")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def browser_config(**extra: Any) -> dict[str, Any]:
    return {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
            "browser": {"enabled": True, "headless": True, "noSandbox": ROOT,
                        "extraArgs": ["--window-size=800,600"], "ssrfPolicy": {"allowedHostnames": ["127.0.0.1"]},
                        **extra}}


def connect(gw: Gateway) -> GatewayClient:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=40)
    c.connect()
    return c


def chromium_pids(user_data_dir: Path) -> set[int]:
    flag = f"--user-data-dir={user_data_dir}"
    out = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if flag in (proc.info["cmdline"] or ()):
                out.add(proc.pid)
    return out


def first_pixel(png: bytes) -> tuple[int, int, int]:
    """RGB of the top-left pixel (every PNG filter leaves the first pixel of the first row as is)."""
    bit_depth, color_type = png[24], png[25]
    assert bit_depth == 8 and color_type in (2, 6), (bit_depth, color_type)
    idat, pos = b"", 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    row = zlib.decompress(idat)
    return row[1], row[2], row[3]


def alive(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    with page_served(PAGE) as url:
        yield url


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, busy_port: int) -> Iterator[Gateway]:
    port = base_port()
    profiles = {"remote": {"cdpUrl": f"http://127.0.0.1:{free_port()}", "attachOnly": True},
                "attach": {"cdpUrl": f"http://127.0.0.1:{port + 11}", "attachOnly": True},
                "busy": {"cdpPort": busy_port}}
    g = Gateway(tmp_path_factory.mktemp("browser"), {"workers": {"side": {"kind": "sleeper"}}},
                config=browser_config(profiles=profiles), port=port)
    try:
        yield start(g)
    finally:
        g.stop()
        if g.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(g.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[GatewayClient]:
    c = connect(gw)
    yield c
    with contextlib.suppress(Exception):
        c.close()


def start(g: Gateway) -> Gateway:
    """Start and wait for the browser worker (not for every worker: the agent's readiness is not ours)."""
    g.start(wait_running=False)
    wait_for(lambda: g.status()["supervisor"]["started"], 20, what="the gateway started")
    g.wait_state("browser", "running")
    return g


def user_data(gw: Gateway, profile: str = "openclaw") -> Path:
    return gw.state_dir / "browser" / profile / "user-data"


# -- the shared gateway, in order ------------------------------------------------------------------------


def test_start_open_tabs_and_screenshot(gw: Gateway, client: GatewayClient, page_server: str) -> None:
    assert client.request("browser.status")["state"] == "stopped"
    user_data(gw).mkdir(parents=True)
    os.symlink("old-container-host-4242", user_data(gw) / "SingletonLock")  # left by a previous hostname
    st = client.request("browser.start")
    assert st["state"] == "running" and st["running"] and st["cdpReady"]
    assert st["cdpPort"] == gw.port + 11 and st["cdpUrl"] == f"http://127.0.0.1:{gw.port + 11}"
    assert st["userDataDir"] == str(user_data(gw)) and st["pid"] in chromium_pids(user_data(gw))
    assert st["headless"] and st["browserVersion"].startswith(("Chrome/", "HeadlessChrome/"))
    cmdline = psutil.Process(st["pid"]).cmdline()
    assert f"--remote-debugging-port={gw.port + 11}" in cmdline and "--window-size=800,600" in cmdline
    assert os.getpgid(st["pid"]) == st["pid"]  # its own process group
    wait_for(lambda: 'cleared stale SingletonLock for profile "openclaw"' in gw.log_text(), 5, what="the lock line")

    opened = client.request("browser.open", {"url": page_server})
    assert opened["title"] == "openclaw-sup test page" and opened["url"] == page_server
    tabs = client.request("browser.tabs")
    assert tabs["running"] and opened["targetId"] in [t["targetId"] for t in tabs["tabs"]]
    assert {"title": "openclaw-sup test page", "url": page_server} in [
        {"title": t["title"], "url": t["url"]} for t in tabs["tabs"]]

    shot = client.request("browser.screenshot", {"targetId": opened["targetId"]})
    png = base64.b64decode(shot["data"])
    assert shot["format"] == "png" and png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (shot["width"], shot["height"]) and width == 800 and 300 < height <= 600
    assert first_pixel(png) == (0, 170, 0)  # the page's #0a0 background: the page was rendered, not a blank tab

    nav = client.request("browser.navigate", {"url": page_server + "?again", "targetId": opened["targetId"]})
    assert nav["ok"] and nav["targetId"] == opened["targetId"]
    with pytest.raises(GatewayError) as bad:
        client.request("browser.open", {"url": "ftp://example.com/x"})
    assert bad.value.code == "INVALID_REQUEST" and "scheme" in bad.value.error["message"]
    for private in ("http://10.1.2.3/", "http://localhost:9/"):  # strict SSRF policy: only 127.0.0.1 is allowed here
        with pytest.raises(GatewayError) as bad:
            client.request("browser.navigate", {"url": private})
        assert "is blocked by browser.ssrfPolicy (private network address)" in bad.value.error["message"]


def test_sigkilled_chromium_is_restarted_and_healthy_again(gw: Gateway, client: GatewayClient) -> None:
    before = client.request("browser.status")
    assert before["running"]
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (s := client.request("browser.status"))["restarts"] == before["restarts"] + 1
                     and s["state"] == "running" and s["cdpReady"] and s["pid"] != before["pid"] and s, 20,
                     what="Chromium restarted")
    assert after["lastExit"] == "killed by SIGKILL"
    assert wait_for(lambda: 'Chromium for profile "openclaw" died (killed by SIGKILL); restarting' in gw.log_text()
                    and "CDP healthy again" in gw.log_text(), 5, what="the restart log lines")
    assert client.request("browser.tabs")["running"]


def test_hung_chromium_is_detected_by_cdp_and_replaced(gw: Gateway, client: GatewayClient) -> None:
    before = client.request("browser.status")
    os.kill(before["pid"], signal.SIGSTOP)  # alive, but its CDP no longer answers
    try:
        after = wait_for(lambda: (s := client.request("browser.status"))["restarts"] == before["restarts"] + 1
                         and s["state"] == "running" and s["cdpReady"] and s, 25, what="the hung Chromium replaced")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(before["pid"], signal.SIGCONT)
    assert after["lastExit"] == "CDP not answering (3 probes)" and after["pid"] != before["pid"]
    wait_for(lambda: not alive(before["pid"]), 5, what="the hung Chromium's group killed")


def test_crash_looping_chromium_ends_failed_and_browser_start_revives_it(gw: Gateway, client: GatewayClient) -> None:
    """The supervisor's restart policy (config/restart.py) with Chromium's numbers: 5 exits within 120 s
    without a stable run (earlier tests' kills may count) make the profile `failed`, not relaunched forever."""
    kills = 0
    while (st := client.request("browser.status"))["state"] != "failed":
        assert kills < 5, f"still restarting after {kills} kills: {st}"
        os.kill(st["pid"], signal.SIGKILL)
        kills += 1
        wait_for(lambda old=st["pid"]: (s := client.request("browser.status"))["state"] == "failed"
                 or (s["state"] == "running" and s["cdpReady"] and s["pid"] != old), 20,
                 what=f"Chromium relaunched or given up after kill {kills}")
    assert st["lastExit"] == "killed by SIGKILL" and not st["running"] and st["pid"] is None
    wait_for(lambda: 'giving up on profile "openclaw": Chromium crash-looping (5 exits within 120s)'
             in gw.log_text(), 5, what="the crash-loop line")
    revived = client.request("browser.start")
    assert revived["state"] == "running" and revived["cdpReady"]
    os.kill(revived["pid"], signal.SIGKILL)  # browser.start cleared the history: a first crash again
    wait_for(lambda: (s := client.request("browser.status"))["state"] == "running" and s["cdpReady"]
             and s["pid"] != revived["pid"], 20, what="Chromium relaunched after browser.start reset the policy")


def test_sigkilled_worker_leaves_no_chromium_and_the_next_starts_a_fresh_one(gw: Gateway) -> None:
    c = connect(gw)
    try:
        old_status = c.request("browser.status")
    finally:
        c.close()
    old_pids = chromium_pids(user_data(gw))
    assert old_status["pid"] in old_pids and len(old_pids) >= 2
    worker = gw.worker("browser")
    side_pid = gw.worker("side")["pid"]
    os.kill(worker["pid"], signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in old_pids), 10, what="every Chromium process of the old worker gone")
    wait_for(lambda: (w := gw.worker("browser"))["state"] == "running" and w["pid"] != worker["pid"], 20,
             what="a new browser worker")
    c = connect(gw)
    try:
        fresh = wait_for(lambda: (s := c.request("browser.status"))["state"] == "running" and s["cdpReady"] and s,
                         20, what="the new worker's Chromium")
    finally:
        c.close()
    new_pids = chromium_pids(user_data(gw))
    assert fresh["pid"] not in old_pids and not new_pids & old_pids
    assert all(os.getpgid(p) == fresh["pid"] for p in new_pids if alive(p))
    assert gw.worker("side")["pid"] == side_pid


def test_chromium_closed_on_purpose_is_not_restarted(gw: Gateway, client: GatewayClient) -> None:
    st = client.request("browser.status")
    version = json.loads(urlopen(f"{st['cdpUrl']}/json/version", timeout=5).read())
    ws = WebSocket(version["webSocketDebuggerUrl"])
    ws.send_text(json.dumps({"id": 1, "method": "Browser.close"}))  # exits with code 0
    after = wait_for(lambda: (s := client.request("browser.status"))["state"] == "stopped" and s, 10,
                     what="the closed browser stopped")
    assert after["lastExit"] == "exit code 0" and after["restarts"] == st["restarts"] and not after["running"]
    assert not (user_data(gw).parent / "wanted").exists()
    assert client.request("browser.start")["state"] == "running"


def test_cli_status_tabs_screenshot_stop_start(gw: Gateway, tmp_path: Path) -> None:
    res = gw.run_cli("browser", "status")
    assert res.returncode == 0, res.stderr
    assert "profile: openclaw" in res.stdout and "state: running" in res.stdout
    assert f"cdpPort: {gw.port + 11}" in res.stdout
    out = tmp_path / "shot.png"
    res = gw.run_cli("browser", "screenshot", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in res.stdout
    res = gw.run_cli("browser", "tabs", "--json")
    assert res.returncode == 0 and '"running": true' in res.stdout
    pids = chromium_pids(user_data(gw))
    res = gw.run_cli("browser", "stop")
    assert res.returncode == 0 and "stopped" in res.stdout
    assert not any(alive(p) for p in pids)
    assert not (user_data(gw).parent / "wanted").exists()
    assert not [p for p in os.listdir(user_data(gw)) if p.startswith("Singleton")]  # a clean stop leaves no lock
    res = gw.run_cli("browser", "start")
    assert res.returncode == 0 and "state: running" in res.stdout, res.stdout + res.stderr


def real_openclaw(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    """The real upstream CLI (spec/conformance.md), which speaks `browser.request` to the gateway."""
    return run_openclaw(gw, "browser", *args, "--url", f"ws://127.0.0.1:{gw.port}", "--token", TOKEN)


def test_real_openclaw_cli_drives_the_worker_through_browser_request(gw: Gateway, page_server: str) -> None:
    res = real_openclaw(gw, "open", page_server + "?real-cli")
    assert res.returncode == 0 and f"opened: {page_server}?real-cli" in res.stdout, res.stdout + res.stderr
    res = real_openclaw(gw, "--json", "status")
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads(res.stdout)
    assert st["running"] and st["profile"] == "openclaw" and st["cdpPort"] == gw.port + 11
    res = real_openclaw(gw, "tabs")
    assert res.returncode == 0 and "openclaw-sup test page" in res.stdout and "?real-cli" in res.stdout, res.stdout
    res = real_openclaw(gw, "screenshot")
    assert res.returncode == 0, res.stdout + res.stderr
    shot = Path(res.stdout.strip().splitlines()[-1])
    assert shot.parent == gw.state_dir / "media" / "browser" and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attach_only_profiles_are_attached_never_launched(gw: Gateway, client: GatewayClient) -> None:
    managed = client.request("browser.status")
    assert managed["running"]
    st = client.request("browser.start", {"profile": "attach"})
    assert st["state"] == "attached" and st["pid"] is None and st["userDataDir"] is None
    assert client.request("browser.tabs", {"profile": "attach"})["running"]
    assert client.request("browser.stop", {"profile": "attach"})["stopped"]
    assert alive(managed["pid"])  # releasing an attached browser never kills it
    dead_url = next(p["cdpUrl"] for p in client.request("browser.status")["profiles"] if p["profile"] == "remote")
    with pytest.raises(GatewayError) as err:
        client.request("browser.start", {"profile": "remote"})
    assert err.value.error["message"] == f'Remote CDP for profile "remote" is not reachable at {dead_url}'
    assert not (gw.state_dir / "browser" / "remote").exists()


def test_port_held_by_another_program(client: GatewayClient, busy_port: int) -> None:
    with pytest.raises(GatewayError) as err:
        client.request("browser.start", {"profile": "busy"})
    assert err.value.error["message"] == f'Port {busy_port} is in use for profile "busy" but not by openclaw'
    assert client.request("browser.status", {"profile": "busy"})["state"] == "failed"


def test_doctor_checks_executable_and_cdp(gw: Gateway) -> None:
    res = gw.run_cli("doctor", "--non-interactive")
    assert f'browser profile "openclaw": CDP reachable at http://127.0.0.1:{gw.port + 11}' in res.stdout, res.stdout
    assert "browser: Chromium at" in res.stdout


def test_two_gateway_profiles_use_different_cdp_ports(gw: Gateway, client: GatewayClient,
                                                      tmp_path: Path) -> None:
    other = Gateway(tmp_path / "other", {}, profile="work", config=browser_config(), port=gw.port + 200)
    try:
        start(other)
        c = connect(other)
        try:
            second = c.request("browser.start")
        finally:
            c.close()
        first = client.request("browser.status")
        assert first["running"] and second["running"] and first["pid"] != second["pid"]
        assert (first["cdpPort"], second["cdpPort"]) == (gw.port + 11, gw.port + 211)
        assert second["userDataDir"] == str(other.state_dir / "browser" / "openclaw" / "user-data")
    finally:
        other.stop()
    assert not chromium_pids(other.state_dir / "browser" / "openclaw" / "user-data")


# -- gateways of their own -------------------------------------------------------------------------------


def test_wrong_executable_path_is_the_documented_error_and_nothing_else_moves(gateway_factory,
                                                                              tmp_path: Path) -> None:
    """Also a "browser" that exits at once: the launch error. Neither touches the gateway or other workers."""
    missing = tmp_path / "no-such-chrome"
    broken_port = free_port()
    g = gateway_factory({"workers": {"side": {"kind": "sleeper"}}},
                        config=browser_config(executablePath=str(missing), profiles={
                            "broken": {"cdpPort": broken_port, "executablePath": shutil.which("false")}}))
    start(g)
    g.wait_state("side", "running")
    pids = g.pids()
    c = connect(g)
    try:
        with pytest.raises(GatewayError) as err:
            c.request("browser.start")
        assert err.value.code == "UNAVAILABLE"
        assert err.value.error["message"] == f"browser.executablePath not found: {missing}"
        st = c.request("browser.status")
        assert st["state"] == "failed" and st["lastError"] == f"browser.executablePath not found: {missing}"
        with pytest.raises(GatewayError) as err:
            c.request("browser.start", {"profile": "broken"})  # a "browser" that exits at once
        assert err.value.error["message"] == f'Failed to start Chrome CDP on port {broken_port} for profile "broken".'
        assert c.request("health")["ok"]
    finally:
        c.close()
    assert g.pids() == pids and all(w["state"] == "running" for w in g.status()["workers"] if w["name"] != "agent")
    res = g.run_cli("browser", "start")
    assert res.returncode == 1 and f"browser.executablePath not found: {missing}" in res.stderr


def test_doctor_fix_clears_stale_singleton_locks(gateway_factory) -> None:
    g = gateway_factory({}, config=browser_config())  # not started: doctor works on the files
    ud = g.state_dir / "browser" / "openclaw" / "user-data"
    ud.mkdir(parents=True)
    os.symlink(f"{socket.gethostname()}-{2**22 + 12345}", ud / "SingletonLock")
    os.symlink("/tmp/org.chromium.Chromium.gone/SingletonSocket", ud / "SingletonSocket")
    res = g.run_cli("doctor", "--non-interactive")
    assert "stale Chromium lock files" in res.stdout and "SingletonLock" in res.stdout, res.stdout
    assert os.path.lexists(ud / "SingletonLock")
    res = g.run_cli("doctor", "--fix", "--non-interactive")
    assert not os.path.lexists(ud / "SingletonLock") and not os.path.lexists(ud / "SingletonSocket"), res.stdout
