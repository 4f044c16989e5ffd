"""The supervisor with real processes, real ZeroMQ and real signals (issue: supervisor core)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import Gateway, free_port, wait_for
from openclaw_sup.ipc.control import ControlError, call

FAST = {"restart": {"stableAfterMs": 200}, "liveness": {"heartbeatIntervalMs": 200}}


def healthz(gw: Gateway) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/healthz", timeout=5) as r:
        return json.loads(r.read())


def zombies_under(pid: int) -> list[int]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if k.status() == psutil.STATUS_ZOMBIE:
                out.append(k.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_spawns_sent_before_the_fork_server_booted(gateway_factory) -> None:
    """The first spawns leave once the port is bound, before the fork server is up (here its boot takes a second):
    the worker is forked when it is and supervised as usual; one of a kind the build lacks is refused by the fork
    server, then skipped as the fork server's list of kinds says, never counted as a failed start."""
    gw = gateway_factory({"kinds": ["sup_test_kinds", "slow_boot_kinds"],
                          "workers": {"w": {"kind": "sleeper"}, "x": {"kind": "not_provided"}}}).start()
    log = gw.log_text()
    assert "worker x (kind not_provided) is not provided by this build; skipped" in log
    assert "spawn failed" not in log
    assert "x" not in {w["name"] for w in gw.status()["workers"]}
    pid = gw.worker("w")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (w := gw.worker("w"))["state"] == "running" and w["pid"] != pid, 10, what="w back after a kill")
    assert gw.worker("w")["restarts"] == 1


def test_fifty_sigkills_each_back_running_with_new_pid(gateway_factory) -> None:
    gw = gateway_factory({**FAST, "workers": {"victim": {"kind": "sleeper"}, "bystander": {"kind": "sleeper"}}})
    gw.start()
    bystander = gw.worker("bystander")["pid"]
    seen = set()
    for i in range(50):
        w = gw.worker("victim")
        assert w["state"] == "running" and w["restarts"] == i
        seen.add(w["pid"])
        time.sleep(0.25)  # past stableAfterMs: each kill is a first crash, restarted at once
        os.kill(w["pid"], signal.SIGKILL)
        wait_for(lambda old=w["pid"]: (x := gw.worker("victim"))["state"] == "running" and x["pid"] != old,
                 10, what=f"victim back after kill {i + 1}")
    final = gw.worker("victim")
    seen.add(final["pid"])
    assert final["restarts"] == 50
    assert len(seen) == 51
    assert final["lastExit"]["signal"] == signal.SIGKILL
    assert gw.worker("bystander")["pid"] == bystander
    assert gw.worker("bystander")["restarts"] == 0
    sup = gw.status()["supervisor"]
    assert zombies_under(sup["pid"]) == []
    assert gw.stop() == 0


def test_crash_loop_ends_failed_with_last_stderr_and_recovers(gateway_factory, tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    fault.write_text("database file is corrupt")
    gw = gateway_factory({"workers": {
        "ok": {"kind": "sleeper"},
        "loopy": {"kind": "crasher", "options": {"faultFile": str(fault)},
                  "restart": {"crashLoopMax": 4, "crashLoopWindowMs": 30_000, "backoffBaseMs": 50,
                              "failedRetryMs": 1500}}}})
    gw.start(wait_running=False)
    w = gw.wait_state("loopy", "failed")
    assert w["lastError"] == "crasher: fatal: database file is corrupt"
    assert w["lastExit"]["code"] == 3
    assert w["retryInS"] is not None
    # The gateway keeps answering: the port, the control socket and the healthy worker.
    assert healthz(gw)["ok"] is True
    assert gw.worker("ok")["state"] == "running"
    res = gw.run_cli("status")
    assert res.returncode == 1
    assert "failed" in res.stdout and "database file is corrupt" in res.stdout
    assert "is crash-looping" in gw.log_text()
    # Slow retries go on while it is failed, then the fault is gone and it recovers.
    fault.unlink()
    gw.wait_state("loopy", "running", timeout=10)
    assert gw.run_cli("status").returncode == 0
    assert gw.stop() == 0


def test_silent_worker_is_killed_and_restarted(gateway_factory, tmp_path: Path) -> None:
    trigger = tmp_path / "hang"
    gw = gateway_factory({"liveness": {"heartbeatIntervalMs": 100, "heartbeatTimeoutMs": 800},
                          "workers": {"hang": {"kind": "hanger", "options": {"triggerFile": str(trigger)}}}})
    gw.start()
    old = gw.worker("hang")["pid"]
    trigger.touch()
    t0 = time.monotonic()
    wait_for(lambda: gw.worker("hang")["restarts"] >= 1, 10, what="the hung worker killed")
    detected = time.monotonic() - t0
    w = gw.worker("hang")
    assert "no heartbeat" in (w["lastError"] or "") and "bound 0.8s" in w["lastError"]
    assert w["lastExit"]["signal"] == signal.SIGKILL
    assert detected < 10
    trigger.unlink()
    w = gw.wait_state("hang", "running")
    assert w["pid"] != old
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE


def test_worker_that_never_says_ready_is_killed_after_start_timeout(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"mute": {"kind": "never_ready",
                                                "liveness": {"startTimeoutMs": 400},
                                                "restart": {"failedRetryMs": 60_000, "crashLoopMax": 2}}}})
    gw.start(wait_running=False)
    w = gw.wait_state("mute", "failed", timeout=15)
    assert w["lastError"] == "did not say ready within 0.4s"
    assert w["restarts"] == 1


def test_flood_and_garbage_cannot_crash_or_bloat_the_supervisor(gateway_factory) -> None:
    gw = gateway_factory({"bus": {"maxMessageBytes": 65536, "rcvHwm": 1000},
                          "workers": {"steady": {"kind": "sleeper"},
                                      "flood": {"kind": "flood", "options": {"count": 300_000}},
                                      "logflood": {"kind": "flood", "options": {"count": 50_000,
                                                                                "msgKind": "log"}},
                                      "junk": {"kind": "garbage", "options": {"oversize": 8 << 20}}}})
    gw.start()
    sup_pid = gw.status()["supervisor"]["pid"]
    rss0 = psutil.Process(sup_pid).memory_info().rss
    wait_for(lambda: "flood flood done" in (t := gw.log_text()) and "log rate limit: dropped" in t, 60,
             interval=0.2, what="the event flood finished and the log flood throttled")
    time.sleep(1.5)
    s = gw.status()
    rss1 = psutil.Process(sup_pid).memory_info().rss
    assert s["supervisor"]["busReceived"] > 100_000
    assert (rss1 - rss0) < 40 * 1024 * 1024, f"supervisor RSS grew by {(rss1 - rss0) >> 20} MB"
    text = gw.log_text()
    assert "dropped a bad bus message from 'junk': message is not JSON" in text
    assert "more bad bus messages from 'junk'" in text
    assert "log rate limit: dropped" in text
    assert "Traceback" not in gw.stdout.read_text()
    assert gw.worker("steady")["state"] == "running" and gw.worker("steady")["restarts"] == 0
    assert healthz(gw)["ok"] is True
    # The oversized frame made libzmq drop that peer's connection, not the supervisor.
    assert psutil.pid_exists(sup_pid)
    assert gw.stop() == 0


def test_sigkill_of_supervisor_leaves_no_process_and_frees_the_port(gateway_factory, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    gw = gateway_factory({"workers": {"a": {"kind": "sleeper"}, "b": {"kind": "sleeper"},
                                      "parent": {"kind": "spawner", "options": {"pidFile": str(pidfile)}}}})
    gw.start()
    s = gw.status()
    pids = [w["pid"] for w in s["workers"]] + [s["supervisor"]["forkServerPid"], int(pidfile.read_text())]
    assert all(psutil.pid_exists(p) for p in pids)
    os.kill(s["supervisor"]["pid"], signal.SIGKILL)
    gw.proc.wait(5)
    t0 = time.monotonic()

    def all_gone() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)

    wait_for(all_gone, 2.0, interval=0.01, what="every worker, the fork server and the grandchild gone")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", gw.port))
    assert time.monotonic() - t0 < 2.0


def test_graceful_stop_keeps_every_log_record_and_uses_the_ladder(gateway_factory) -> None:
    gw = gateway_factory({"stop": {"busTimeoutMs": 300, "termTimeoutMs": 300},
                          "workers": {"chatty": {"kind": "flood", "options": {"count": 2000, "msgKind": "log",
                                                                              "delay": 0}},
                                      "stubborn": {"kind": "stubborn"}, "calm": {"kind": "sleeper"}}})
    gw.start()
    wait_for(lambda: "flood done" in gw.log_text(), 20, what="the chatty worker finished logging")
    pids = gw.pids()
    t0 = time.monotonic()
    assert gw.stop() == 0
    took = time.monotonic() - t0
    lines = [r["message"] for r in gw.log_lines() if r.get("worker") == "chatty"]
    assert sum(1 for m in lines if m.startswith("flood line ")) == 2000
    text = gw.log_text()
    assert "sleeper calm stopping cleanly" in text
    assert "worker stubborn (pid" in text and "sending SIGTERM" in text and "sending SIGKILL" in text
    assert "worker calm stopped (pid" in text and "exit code 0" in text
    assert "gateway stopped" in text
    assert all(not psutil.pid_exists(p) for p in pids.values() if p)
    assert took < 20


def test_log_records_survive_a_saturated_bus(gateway_factory) -> None:
    gw = gateway_factory({"bus": {"rcvHwm": 100},
                          "workers": {"busy": {"kind": "flood", "options": {"count": 200_000, "msgKind": "mixed",
                                                                            "delay": 0}}}})
    gw.start()
    wait_for(lambda: "busy flood done" in gw.log_text(), 60, interval=0.2, what="the flood")
    assert gw.stop() == 0
    lines = [r["message"] for r in gw.log_lines() if r.get("worker") == "busy"]
    assert sum(1 for m in lines if m.startswith("flood line ")) == 200_000 // 40
    assert "log rate limit" not in gw.log_text()


def test_status_command_exit_codes_and_json(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"one": {"kind": "sleeper"}}})
    res = gw.run_cli("status")
    assert res.returncode == 2 and "no gateway is running" in res.stderr
    gw.start()
    res = gw.run_cli("status")
    assert res.returncode == 0, res.stderr
    header, _, table, *rows = res.stdout.splitlines()
    row = next(r for r in rows if r.startswith("one "))
    assert f"pid {gw.status()['supervisor']['pid']}" in header
    for col in ("NAME", "KIND", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT", "RSS", "CPU%", "HB",
                "LAST ERROR"):
        assert col in table
    assert row.split()[:4] == ["one", "sleeper", str(gw.worker("one")["pid"]), "running"]
    data = json.loads(gw.run_cli("status", "--json").stdout)
    one = next(w for w in data["workers"] if w["name"] == "one")
    assert data["supervisor"]["rss"] > 0 and one["heartbeatAgeS"] is not None


def test_worker_process_identity(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"w1": {"kind": "sleeper"}}}, profile="blue")
    gw.start()
    s = gw.status()
    pid = next(w["pid"] for w in s["workers"] if w["name"] == "w1")
    p = psutil.Process(pid)
    assert " ".join(p.cmdline()).startswith("openclaw-sup: w1 [blue]")
    assert os.getpgid(pid) == pid
    assert p.ppid() == s["supervisor"]["forkServerPid"]
    # A worker inherits neither the listening socket nor the supervisor's bus socket.
    assert not [c for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    run_dir = gw.state_dir / "run"
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert (run_dir / "bus.sock").exists()


def test_request_round_trip_between_workers(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"asker": {"kind": "asker", "options": {"target": "answerer"}},
                                      "answerer": {"kind": "sleeper"}}})
    gw.start()
    wait_for(lambda: "asker got" in gw.log_text(), 10, what="the answer")
    assert f"'pid': {gw.worker('answerer')['pid']}" in gw.log_text()
    assert "asker error: UNAVAILABLE no worker named 'ghost'" in gw.log_text()


def test_requests_workers_send_as_they_start_are_all_answered(gateway_factory) -> None:
    """A worker can speak before the fork server's `spawned` reply reaches the supervisor (several starting at
    once, or one born from a standby): a request it sends then waits with its hello and ready for the spawn to be
    recorded, instead of being dropped (the worker would wait out its timeout)."""
    askers = [f"a{i}" for i in range(20)]
    gw = gateway_factory({"workers": {name: {"kind": "asker", "options": {"target": "ghost", "wait": 0,
                                                                          "timeout": 30}} for name in askers}})
    gw.start()
    wait_for(lambda: gw.log_text().count("asker error: UNAVAILABLE no worker named 'ghost'") == 2 * len(askers), 10,
             what="every asker's two answers")


def test_a_worker_waiting_on_a_dead_worker_gets_an_error_at_once(gateway_factory) -> None:
    """The asker's request would wait 60 s; the owner's death fails it as soon as the exit is reaped."""
    gw = gateway_factory({"workers": {
        "asker": {"kind": "asker", "options": {"target": "owner", "method": "cron.hang", "timeout": 60}},
        "owner": {"kind": "fake_owner"}}})
    gw.start()
    wait_for(lambda: "asker asks owner" in gw.log_text(), 10, what="the asker's request on its way")
    os.kill(gw.worker("owner")["pid"], signal.SIGKILL)
    line = wait_for(lambda: next((m for m in gw.log_text().splitlines() if m.startswith("asker error:")), None), 10,
                    what="the asker's error")
    assert line.startswith("asker error: UNAVAILABLE the owner worker exited (killed by SIGKILL)"), line
    assert "before answering" in line


def test_sighup_reload_touches_only_changed_workers(gateway_factory) -> None:
    workers = {"a": {"kind": "sleeper"}, "b": {"kind": "sleeper", "options": {"v": 1}},
               "c": {"kind": "sleeper"}}
    gw = gateway_factory({"workers": workers})
    gw.start()
    before = gw.pids()
    settings = json.loads(gw.settings_file.read_text())
    settings["workers"]["b"]["options"]["v"] = 2
    del settings["workers"]["c"]
    settings["workers"]["d"] = {"kind": "sleeper"}
    gw.settings_file.write_text(json.dumps(settings))
    gw.signal(signal.SIGHUP)
    wait_for(lambda: set(gw.pids()) == {"agent", "browser", "a", "b", "d"} and gw.worker("b")["pid"] != before["b"]
             and gw.worker("d")["state"] == "running" and gw.worker("b")["state"] == "running", 10,
             what="the reload applied")
    after = gw.pids()
    assert after["a"] == before["a"] and after["agent"] == before["agent"]
    assert not psutil.pid_exists(before["c"])
    assert "config reload (SIGHUP, mode hybrid): start d; stop c; respawn b; keep a" in gw.log_text()
    # An invalid edit is skipped and nothing restarts.
    gw.settings_file.write_text("{ workers: { a: ")
    gw.signal(signal.SIGHUP)
    wait_for(lambda: "config reload skipped (invalid config)" in gw.log_text(), 5)
    assert gw.pids() == after


def test_sigusr1_restarts_every_worker_and_keeps_the_port(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"a": {"kind": "sleeper"}, "b": {"kind": "sleeper"}}})
    gw.start()
    before = gw.pids()
    fs_before = gw.status()["supervisor"]["forkServerPid"]
    gw.signal(signal.SIGUSR1)
    wait_for(lambda: all(p and p != before[n] for n, p in gw.pids().items())
             and gw.status()["supervisor"]["forkServerPid"] != fs_before, 15, what="every worker replaced")
    gw.wait_all_running()
    assert healthz(gw)["ok"] is True
    assert gw.stop() == 0


def test_lost_fork_server_is_replaced_and_workers_come_back(gateway_factory) -> None:
    gw = gateway_factory({**FAST, "workers": {"a": {"kind": "sleeper"}, "b": {"kind": "sleeper"}}})
    gw.start()
    s = gw.status()
    old_fs = s["supervisor"]["forkServerPid"]
    old = gw.pids()
    os.kill(old_fs, signal.SIGKILL)
    wait_for(lambda: (x := gw.status())["supervisor"]["forkServerPid"] != old_fs
             and all(w["state"] == "running" and w["pid"] != old[w["name"]] for w in x["workers"]), 15,
             what="a new fork server and both workers back")
    assert all(not psutil.pid_exists(p) for p in old.values())
    assert "fork server (pid" in gw.log_text()
    assert gw.stop() == 0


def _mapped(pid: int, needle: str) -> set[str]:
    """The lines of a process's memory map naming `needle` (address range and file): the same line in a parent
    and its forked child is one mapping, inherited, not a second copy."""
    return {" ".join((line.split()[0], line.split()[-1])) for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if needle in line}


def test_fork_server_holds_only_what_the_running_kinds_need(gateway_factory) -> None:
    """The fork server preloads what every worker shares and nothing else: with no kind that needs an HTTP
    client or psutil running (the browser worker, on by default, watches Chromium with psutil: off here), it has
    neither."""
    gw = gateway_factory({"workers": {"a": {"kind": "sleeper"}}}, config={"browser": {"enabled": False}})
    gw.start()
    for pid in (gw.status()["supervisor"]["forkServerPid"], gw.pids()["a"]):
        assert not _mapped(pid, "/aiohttp/"), f"pid {pid} has aiohttp loaded"
        assert not _mapped(pid, "_psutil_linux"), f"pid {pid} has psutil loaded"


def test_a_kind_that_needs_http_gets_it_from_the_fork_server(gateway_factory) -> None:
    """A channel kind whose workers all open HTTP at once (telegram) has aiohttp imported by the fork server
    before its first fork: the worker maps it from its parent, so every such worker shares it."""
    gw = gateway_factory({"workers": {}}, config={"channels": {"telegram": {
        "botToken": "123:bench-token", "apiBaseUrl": f"http://127.0.0.1:{free_port()}"}}})
    gw.start(wait_running=False)
    name = "channel:telegram:default"
    worker = wait_for(lambda: (p := gw.pids().get(name)) and p, 20, what="the telegram worker forked")
    fs = gw.status()["supervisor"]["forkServerPid"]
    inherited = _mapped(fs, "/aiohttp/")
    assert inherited, "the fork server did not load aiohttp for the telegram kind"
    assert inherited <= _mapped(worker, "/aiohttp/")


@pytest.mark.live  # a fresh interpreter: what it imports is the point
def test_every_built_in_kind_is_known_by_name_before_its_module_loads() -> None:
    """The fork server imports a built-in kind's module only for its first worker, so the registry's names must
    match what the modules register: none missing (it would be an unknown kind), none extra."""
    code = ("import importlib, json\n"
            "from openclaw_sup.workers import registry\n"
            "named = sorted(registry.BUILTIN_KINDS)\n"
            "for module in sorted(set(registry.BUILTIN_KINDS.values())):\n"
            "    importlib.import_module(module)\n"
            "print(json.dumps([named, sorted(registry._KINDS)]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    named, registered = json.loads(run.stdout)
    assert named == registered


def test_second_gateway_on_same_state_dir_is_refused(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}})
    gw.start()
    res = subprocess.run([str(gw.proc.args[0]), "gateway", "--port", str(gw.port + 1)], env=gw.env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert f"gateway already running (pid {gw.status()['supervisor']['pid']})" in res.stderr


def test_rss_ceiling_restarts_the_worker(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"fat": {"kind": "sleeper", "liveness": {"rssLimitMb": 5,
                                                                              "heartbeatIntervalMs": 100}}}})
    gw.start(wait_running=False)
    w = wait_for(lambda: (x := gw.worker("fat"))["restarts"] >= 1 and x, 10, what="a restart over the ceiling")
    assert "over the 5 MB ceiling" in w["lastError"]


def test_control_socket_rejects_bad_requests(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}})
    gw.start()
    with pytest.raises(ControlError, match="unknown control op 'explode'"):
        call(gw.control, "explode")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(gw.control))
        s.sendall(b"this is not json\n")
        assert b"bad control request" in s.recv(4096)
    assert gw.status()["ok"]


def test_status_is_import_light_and_watch_refreshes(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"one": {"kind": "sleeper"}}})
    gw.start()
    res = subprocess.run([str(Path(gw.proc.args[0]).parent / "python"), "-X", "importtime", "-m", "openclaw_sup",
                          *gw.cli_args(), "status"], env=gw.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert "openclaw_sup.cli.status" in imported
    assert not imported & {"asyncio", "zmq", "typer", "rich", "aiohttp", "uvloop", "psutil", "orjson", "click"}
    # SIGINT as a terminal gives it, even when the suite itself runs as a background job (SIGINT ignored)
    watch = subprocess.Popen([str(gw.proc.args[0]), *gw.cli_args(), "status", "--watch"], env=gw.env,
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert watch.stdout is not None
    headers, deadline = 0, time.monotonic() + 15
    while headers < 2 and time.monotonic() < deadline:  # the table drawn, then redrawn
        headers += "NAME  " in watch.stdout.readline()
    watch.send_signal(signal.SIGINT)
    watch.communicate(timeout=10)
    assert watch.returncode == 0 and headers >= 2


def test_many_workers_started_at_once_all_reach_running(gateway_factory) -> None:
    """Workers may say `ready` before the supervisor has read the fork server's `spawned` reply."""
    gw = gateway_factory({"workers": {f"w{i:02d}": {"kind": "sleeper"} for i in range(24)}})
    gw.start()
    for _ in range(3):
        before = gw.pids()
        gw.signal(signal.SIGUSR1)
        wait_for(lambda b=before: all(p and p != b[n] for n, p in gw.pids().items()), 20, what="all replaced")
        gw.wait_all_running(timeout=20)
    assert gw.stop() == 0
