"""Browser profiles resolved from the config (ports, headless, attach-only, paths) and Chromium's lock files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from openclaw_sup.config.browser import browser_profiles, stale_locks
from openclaw_sup.workers.browser.chromium import chromium_argv, exiting
from openclaw_sup.workers.browser.ssrf import host_matches

STATE = Path("/state")
NO_DISPLAY: dict[str, str] = {}
DISPLAY = {"DISPLAY": ":0"}


def test_default_profile_is_auto_created_on_the_first_derived_cdp_port() -> None:
    profiles = browser_profiles({}, 18789, STATE, NO_DISPLAY)
    p = profiles["openclaw"]
    assert list(profiles) == ["openclaw"] and p.managed
    assert (p.cdp_port, p.cdp_url) == (18800, "http://127.0.0.1:18800")
    assert p.user_data_dir == STATE / "browser" / "openclaw" / "user-data"
    assert browser_profiles({}, 19001, STATE, NO_DISPLAY)["openclaw"].cdp_port == 19012  # --dev


def test_ports_skip_pinned_ones_and_follow_range_start() -> None:
    cfg = {"defaultProfile": "main", "profiles": {"pinned": {"cdpPort": 18800}}}
    profiles = browser_profiles(cfg, 18789, STATE, NO_DISPLAY)
    assert profiles["main"].cdp_port == 18801 and profiles["pinned"].cdp_port == 18800
    assert browser_profiles({"cdpPortRangeStart": 9222}, 18789, STATE, NO_DISPLAY)["openclaw"].cdp_port == 9223


def test_cdp_url_and_attach_only_profiles_are_never_managed() -> None:
    cfg = {"cdpUrl": "ws://10.0.0.5:9333/devtools/browser/x",
           "profiles": {"local": {"cdpPort": 18850, "attachOnly": True}, "loop": {"cdpUrl": "http://127.0.0.1:18860"}}}
    profiles = browser_profiles(cfg, 18789, STATE, NO_DISPLAY)
    legacy, local, loop = profiles["openclaw"], profiles["local"], profiles["loop"]
    assert legacy.attach_only and legacy.remote and not legacy.managed and legacy.cdp_port == 9333
    assert local.attach_only and not local.remote and local.cdp_url == "http://127.0.0.1:18850"
    assert loop.managed and loop.cdp_port == 18860  # upstream: loopback external CDP must say attachOnly


def test_ssrf_host_patterns() -> None:
    assert host_matches("a.example.com", ["*.example.com"]) and not host_matches("example.com", ["*.example.com"])
    assert host_matches("Example.com.", ["example.com"]) and not host_matches("badexample.com", ["*.example.com"])


def test_headless_automatic_without_display_env_wins() -> None:
    assert browser_profiles({"headless": False}, 18789, STATE, NO_DISPLAY)["openclaw"].headless
    assert not browser_profiles({}, 18789, STATE, DISPLAY)["openclaw"].headless
    assert browser_profiles({"headless": True}, 18789, STATE, DISPLAY)["openclaw"].headless
    forced = browser_profiles({}, 18789, STATE, {"OPENCLAW_BROWSER_HEADLESS": "0"})["openclaw"]
    assert not forced.headless and forced.headless_forced_off


def test_executable_path_expands_home_and_argv_has_the_flags(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/op")
    cfg = {"executablePath": "~/bin/chrome", "noSandbox": True, "extraArgs": ["--lang=fr"]}
    p = browser_profiles(cfg, 18789, STATE, NO_DISPLAY)["openclaw"]
    assert p.executable_path == "/home/op/bin/chrome"
    argv = chromium_argv(p.executable_path, p)
    assert argv[0] == "/home/op/bin/chrome" and "--remote-debugging-port=18800" in argv
    assert f"--user-data-dir={p.user_data_dir}" in argv
    assert {"--headless=new", "--disable-gpu", "--no-sandbox"} <= set(argv)
    assert argv[-2:] == ["--lang=fr", "about:blank"]


def test_stale_locks_only_when_their_owner_is_gone(tmp_path: Path) -> None:
    host = socket.gethostname()
    os.symlink(f"{host}-{os.getpid()}", tmp_path / "SingletonLock")
    os.symlink("/tmp/gone/SingletonSocket", tmp_path / "SingletonSocket")
    assert stale_locks(tmp_path) == []  # a live owner: in use
    (tmp_path / "SingletonLock").unlink()
    os.symlink(f"{host}-{2**22 + 4321}", tmp_path / "SingletonLock")
    assert {p.name for p in stale_locks(tmp_path)} == {"SingletonLock", "SingletonSocket"}
    (tmp_path / "SingletonLock").unlink()
    os.symlink(f"{host}-gone-{os.getpid()}", tmp_path / "SingletonLock")
    assert len(stale_locks(tmp_path)) == 2  # another host (a container's old hostname): stale too


def test_a_port_holder_on_its_way_out_is_waited_for_not_taken_for_a_stranger() -> None:
    """A SIGKILLed Chromium's command line reads empty before its listening socket is closed; taken for another
    program's, the next start failed with "in use ... but not by openclaw" while the port was being freed."""
    import subprocess
    import sys

    import psutil

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        dead_proc = psutil.Process(dead.pid)
        os.waitid(os.P_PID, dead.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert exiting(dead_proc) and not exiting(psutil.Process(live.pid)) and not exiting(psutil.Process())
    finally:
        live.kill()
        live.wait()
        dead.wait()
    assert exiting(dead_proc)  # reaped: gone
