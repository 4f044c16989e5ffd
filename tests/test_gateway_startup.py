"""Start-up guards of the gateway port and our own client commands (`gateway status|call`, `health`)."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from conftest import BIN, Gateway, free_port, wait_for
from openclaw_sup.gateway.client import GatewayClient

TOKEN = "startup-token-0123456789abcdef"


def run_gateway(gw: Gateway, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *gw.cli_args(), "gateway", *args], env=gw.env, capture_output=True, text=True,
                          timeout=timeout)


def test_remote_mode_is_blocked_unless_allowed(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}}, config={"gateway": {"mode": "remote"}})
    res = run_gateway(gw)
    assert res.returncode == 78
    assert "Gateway start blocked: set gateway.mode=local" in res.stderr
    gw.start(True, "--allow-unconfigured")
    assert gw.status()["ok"]


def test_missing_mode_in_existing_file_is_blocked(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}})
    cfg = json.loads((gw.state_dir / "openclaw.json").read_text())
    del cfg["gateway"]["mode"]
    (gw.state_dir / "openclaw.json").write_text(json.dumps(cfg))
    res = run_gateway(gw)
    assert res.returncode == 78 and "existing config is missing gateway.mode" in res.stderr


def test_non_loopback_without_auth_is_refused(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}}, config={"gateway": {"bind": "lan"}})
    res = run_gateway(gw)
    assert res.returncode == 78
    assert f"refusing to bind gateway to 0.0.0.0:{gw.port} without auth" in res.stderr


def test_lan_bind_with_token_listens_on_all_addresses(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}}, config={"gateway": {"bind": "lan", "auth": {"token": TOKEN}}}).start()
    listen = [c for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == gw.port]
    assert [c.laddr.ip for c in listen] == ["0.0.0.0"]


def test_port_taken_and_force(gateway_factory) -> None:
    first = gateway_factory({"workers": {}}).start()
    second = gateway_factory({"workers": {}}, port=first.port)
    res = run_gateway(second)
    assert res.returncode == 1
    assert f"another gateway instance is already listening on ws://127.0.0.1:{first.port}" in res.stderr
    second.start(True, "--force")
    assert first.proc.wait(10) == 0
    assert second.status()["ok"]
    stranger_port = free_port()
    stranger = subprocess.Popen([sys.executable, "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',"
                                 f"{stranger_port})); s.listen(); time.sleep(60)"])
    try:
        wait_for(lambda: any(c.laddr.port == stranger_port for c in psutil.net_connections("inet")
                             if c.status == "LISTEN"), 5)
        third = gateway_factory({"workers": {}}, port=stranger_port)
        res = run_gateway(third, "--force")
        assert res.returncode == 1
        assert f"held by pid {stranger.pid}" in res.stderr and "refusing to kill it" in res.stderr
        assert stranger.poll() is None
    finally:
        stranger.kill()


def test_port_precedence_env_over_config(gateway_factory) -> None:
    env_port = free_port()
    gw = gateway_factory({"workers": {}}, extra_env={"OPENCLAW_GATEWAY_PORT": str(env_port)})
    gw.start(True)
    assert gw.status()["supervisor"]["listen"] == f"ws://127.0.0.1:{env_port}"
    gw.stop()
    cli_port = free_port()
    gw2 = gateway_factory({"workers": {}}, extra_env={"OPENCLAW_GATEWAY_PORT": str(env_port)})
    gw2.start(True, "--port", str(cli_port))
    assert gw2.status()["supervisor"]["listen"] == f"ws://127.0.0.1:{cli_port}"


def test_our_cli_gateway_status_call_and_health(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"w": {"kind": "sleeper"}}},
                         config={"gateway": {"auth": {"token": TOKEN}}}).start()
    res = gw.run_cli("gateway", "status")
    assert res.returncode == 0, res.stderr
    assert "Runtime: running" in res.stdout and "RPC probe: ok" in res.stdout
    assert f"Listening: 127.0.0.1:{gw.port}" in res.stdout and "Config (cli):" in res.stdout
    data = json.loads(gw.run_cli("gateway", "status", "--json").stdout)
    assert data["rpc"]["ok"] is True and data["runtime"]["status"] == "running"
    bad = gw.run_cli("gateway", "status", "--require-rpc", "--url", f"ws://127.0.0.1:{gw.port}", "--token", "nope")
    assert bad.returncode == 1 and "RPC probe: failed" in bad.stdout and "unauthorized" in bad.stdout
    no_creds = gw.run_cli("gateway", "status", "--url", f"ws://127.0.0.1:{gw.port}")
    assert no_creds.returncode != 0
    assert "gateway url override requires explicit credentials" in no_creds.stderr
    called = gw.run_cli("gateway", "call", "health")
    assert called.returncode == 0
    assert [w["name"] for w in json.loads(called.stdout)["workers"]] == ["agent", "browser", "w"]
    health = gw.run_cli("health")
    assert health.returncode == 0 and "Worker w: running" in health.stdout
    gw.stop()
    down = gw.run_cli("gateway", "status", "--require-rpc")
    assert down.returncode == 1 and "Runtime: stopped" in down.stdout and "RPC probe: failed" in down.stdout



def test_invalid_config_exits_78_naming_path_value_and_reason(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}}, config={"gateway": {"bind": "everywhere"}, "logging": {"level": "loud"}})
    res = run_gateway(gw)
    assert res.returncode == 78
    assert f"Invalid config at {gw.state_dir / 'openclaw.json'}:" in res.stderr
    assert "gateway.bind" in res.stderr and "everywhere" in res.stderr
    assert "logging.level" in res.stderr and "loud" in res.stderr
    (gw.state_dir / "openclaw.json").write_text("{ gateway: ")
    res = run_gateway(gw)
    assert res.returncode == 78 and "not valid JSON5" in res.stderr


def test_unimplemented_upstream_sections_are_reported_not_fatal(gateway_factory) -> None:
    gw = gateway_factory({"workers": {}}, config={"skills": {"allow": ["x"]}, "plugins": {"entries": {}}})
    gw.start()
    assert "skills" in gw.stdout.read_text() and gw.status()["ok"]


def test_a_bad_profile_name_is_refused_by_every_entry_point(tmp_path) -> None:
    """`--profile` names a directory (`~/.openclaw-NAME`): a name that is not one is refused before anything runs,
    with what a name may hold, and nothing is created under HOME."""
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for argv in (["status"], ["gateway"], ["node", "identity"], ["node", "run"]):
        res = subprocess.run([str(BIN), "--profile", "bad/../name", *argv], env=env, capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 2, (argv, res.stdout, res.stderr)
        assert "invalid profile name 'bad/../name': use letters, digits, '-' or '_'" in res.stderr, (argv, res.stderr)
    assert list(tmp_path.iterdir()) == []


def _processes_of(gw: Gateway) -> list[str]:
    """Processes still running with this gateway's HOME (the supervisor's whole tree inherits it)."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("HOME") == str(gw.home):
                left.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        except psutil.Error:
            continue
    return left


def test_a_refused_config_leaves_no_process_and_writes_nothing(gateway_factory) -> None:
    """A config refused before the start (invalid, or refused by a check made after the fork server was forked)
    exits 78 with no worker forked, no process left behind and nothing written to the state dir."""
    gw = gateway_factory({}, extra_env={"OPENCLAW_SKIP_CRON": ""})
    before = sorted(p.relative_to(gw.state_dir) for p in gw.state_dir.rglob("*"))
    for config in ("{ gateway: ", json.dumps({"gateway": {"mode": "local", "port": gw.port, "bind": "lan"}})):
        (gw.state_dir / "openclaw.json").write_text(config)
        res = run_gateway(gw)
        assert res.returncode == 78, res.stderr
        assert _processes_of(gw) == []
        assert sorted(p.relative_to(gw.state_dir) for p in gw.state_dir.rglob("*")) == before
    assert "refusing to bind gateway" in res.stderr


def test_the_agent_is_asked_for_its_session_counts_as_it_starts(gateway_factory) -> None:
    """The agent's session counts are asked when it says ready, while the gateway starts, so a client's first
    `health` (as the gateway leaves `starting`) is answered without a round trip to the agent."""
    gw = gateway_factory({"workers": {"agent": {"kind": "session_counter"}}},
                         config={"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}}).start()
    wait_for(lambda: "sessions.summary asked (1)" in gw.log_text(), 10,
             what="the agent asked for its session counts with no client connected")
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    try:
        c.connect()
        health = c.request("health")
    finally:
        c.close()
    assert health["sessions"]["count"] == 1, "the first health asked the agent again"


def test_the_nodes_database_is_made_on_first_use_not_at_start(gateway_factory) -> None:
    """Creating it was on every fresh start's way to `gateway listening`; a host with no node never needs it."""
    gw = gateway_factory({"workers": {}},
                         config={"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}}).start()
    nodes_db = gw.state_dir / "state" / "openclaw-sup-nodes.sqlite"
    assert not nodes_db.exists()
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    try:
        c.connect()
        assert c.request("node.list")["nodes"] == []
    finally:
        c.close()
    assert nodes_db.exists() and nodes_db.stat().st_mode & 0o777 == 0o600
