"""The real `openclaw` CLI on the state dir our running gateway uses, run as a user runs it (same HOME, default
state dir and config), sees our data and exits 0: status (plain, --deep, --all), doctor, sessions, DM pairing
(list, then approve, after which our IRC worker answers the sender), cron list and runs, tasks, models, memory,
security audit; and its writes while our gateway runs are safe.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from channel_servers import NGIRCD, IrcClient, Ngircd
from upstream_state import cli_env, json_out, ok, reads, rows, run_real

from conftest import Gateway, run_side_by_side, wait_for
from openclaw_sup.config.pairing_store import PairingStore
from openclaw_sup.gateway.client import GatewayClient

pytestmark = pytest.mark.skipif(not Path(NGIRCD).exists(), reason="ngircd not installed (scripts/debian-packages.txt)")

TOKEN = "state-cli-token-0123456789abcdef"
BOT = "clawbot"


@pytest.fixture
def ircd(tmp_path: Path) -> Any:
    server = Ngircd(tmp_path / "ngircd").start()
    yield server
    server.kill()


def our_gateway(factory: Any, ircd: Ngircd) -> Gateway:
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "agents": {"defaults": {"model": "echo/echo"}},
              "channels": {"irc": {"host": "127.0.0.1", "port": ircd.port, "nick": BOT}}}
    return factory({"kinds": []}, config=config, extra_env={"OPENCLAW_SKIP_CRON": ""}).start()


def irc_connected(gw: Gateway) -> bool:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    try:
        return bool(c.request("channels.status", {})["channelAccounts"]["irc"][0]["connected"])
    finally:
        c.close()


def bot_line(client: IrcClient, needle: str) -> str:
    return client.expect(lambda ln: ln.startswith(f":{BOT}!") and needle in ln, 30, what=f"the bot saying {needle!r}")


def test_the_real_cli_reads_and_writes_our_state_while_our_gateway_runs(gateway_factory, ircd: Ngircd) -> None:
    gw = our_gateway(gateway_factory, ircd)
    env = cli_env(gw.home)  # no OPENCLAW_STATE_DIR: ~/.openclaw, the gateway's own state dir and config
    wait_for(lambda: irc_connected(gw), 30, what="the IRC worker connected")

    # Our data: an agent run (through our gateway), a cron job and its run (side by side: independent), a pending
    # DM pairing request.
    def cron_job() -> str:
        job = json_out(run_real(env, "cron", "add", "--name", "statejob", "--every", "1h", "--no-deliver",
                                "--command", "echo from-our-scheduler", "--json"))
        job_id = job.get("id") or job["job"]["id"]
        ok(run_real(env, "cron", "run", job_id))
        runs = wait_for(lambda: [e for e in json_out(run_real(env, "cron", "runs", "--id", job_id))["entries"]
                                 if e.get("status") == "ok"], 60, interval=1, what="our cron run in `cron runs`")
        assert runs[0]["summary"] == "from-our-scheduler" and runs[0]["jobId"] == job_id
        return job_id

    agent, job_id = run_side_by_side([
        lambda: run_real(env, "agent", "--agent", "main", "--message", "state check one"), cron_job])
    assert "state check one" in ok(agent)
    alice = IrcClient(ircd.port, "alice")
    alice.privmsg(BOT, "hello bot")
    code = re.search(r"Pairing code: ([A-Z2-9]{8})", bot_line(alice, "Pairing code:")).group(1)

    doctor = ok(run_real(env, "doctor", "--non-interactive"))
    assert "schema ownership" not in doctor and "refused to continue" not in doctor

    # after the doctor: status and status --deep list our session; status --all our agent's store and its
    # session count. The runs that load the IRC plugin (absent here: ClawHub's back-off) go first, three at a time.
    listed, listed_table, status, deep, everything, sessions, sessions_table = reads(
        env, ("pairing", "list", "irc", "--json"), ("pairing", "list", "irc"), ("status",), ("status", "--deep"),
        ("status", "--all"), ("sessions", "--json"), ("sessions",), workers=3)
    for out in (status, deep):
        assert "agent:main:main" in ok(out), out.args
    everything = ok(everything)
    assert re.search(r"│ main\s+│[^│]*│\s+1\s+│", everything) and "1 sessions" in everything, everything

    sessions = json_out(sessions)
    assert sessions["path"] == str(gw.state_dir / "agents" / "main" / "agent" / "openclaw-agent.sqlite")
    main = [s for s in sessions["sessions"] if s["key"] == "agent:main:main"]
    assert main and main[0]["modelProvider"] == "echo" and main[0]["agentId"] == "main"
    assert "agent:main:main" in ok(sessions_table)

    listed = json_out(listed)
    assert [(r["code"], r["id"], r["meta"]["accountId"]) for r in listed["requests"]] == [(code, "alice", "default")]
    assert code in ok(listed_table)
    assert "alice" in ok(run_real(env, "pairing", "approve", "irc", code))
    alice.privmsg(BOT, "approved now")
    assert "approved now" in bot_line(alice, "approved now")  # the echo agent answered through our IRC worker

    audit, cron, cron_table, cron_runs, tasks, tasks_table, models, memory = reads(
        env, ("security", "audit", "--json"), ("cron", "list", "--json"), ("cron", "list"),
        ("cron", "runs", "--id", job_id), ("tasks", "list", "--json"), ("tasks", "list"), ("models", "status"),
        ("memory", "status"), workers=3)
    cron = json_out(cron)
    assert [j["name"] for j in cron["jobs"] if j["id"] == job_id] == ["statejob"]
    assert "statejob" in ok(cron_table)
    assert "from-our-scheduler" in ok(cron_runs)

    tasks = json_out(tasks)["tasks"]
    cron_tasks = [t for t in tasks if t["runtime"] == "cron" and t["sourceId"] == job_id]
    assert cron_tasks and cron_tasks[0]["status"] == "succeeded" and cron_tasks[0]["terminalSummary"] == \
        "from-our-scheduler"
    agent_tasks = [t for t in tasks if t["runtime"] == "cli" and t["childSessionKey"] == "agent:main:main"]
    assert agent_tasks and agent_tasks[0]["status"] == "succeeded"
    assert "from-our-scheduler" in ok(tasks_table)

    assert "echo" in ok(models)
    assert "openclaw-agent.sqlite" in ok(memory)
    audit = json_out(audit)
    ours = [f for f in audit["findings"] if str(gw.state_dir / "state") in json.dumps(f)
            or str(gw.state_dir / "agents") in json.dumps(f) or ".sqlite" in json.dumps(f)]
    assert ours == [] and all(not f["checkId"].startswith("fs.") for f in audit["findings"]), audit["findings"]
    assert gw.worker("channel:irc:default")["restarts"] == 0 and gw.worker("scheduler")["restarts"] == 0
    alice.close()


def test_real_cli_writes_interleave_with_our_writers(gateway_factory, ircd: Ngircd, tmp_path: Path) -> None:
    """The real CLI approves codes while our stores keep writing the same tables (two transactions every 50 ms,
    far above what channel workers and the scheduler write): WAL and busy timeouts keep both sides' writes,
    nothing errors, and the database stays whole. (A writer that never pauses makes the real CLI give up taking
    its read snapshot after ten tries, whoever that writer is: upstream's own gateway included.)"""
    gw = our_gateway(gateway_factory, ircd)
    env = cli_env(gw.home)
    db = gw.state_dir / "state" / "openclaw.sqlite"
    codes = []
    for n in range(3):
        store = PairingStore(db)
        outcome = store.request("telegram", f"acct{n}", f"sender{n}")
        store.close()
        assert outcome.request is not None
        codes.append((f"acct{n}", outcome.request.code))
    stop = threading.Event()
    errors: list[str] = []
    writes = [0]

    def our_writer() -> None:
        store = PairingStore(db)
        try:
            while not stop.is_set():
                n = writes[0]
                out = store.request("irc", f"load{n % 50}", f"user{n}")
                if out.request is not None:
                    store.approve("irc", out.request.code)
                writes[0] += 1
                stop.wait(0.05)
        except Exception as exc:  # the assertion below shows it
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            store.close()

    writer = threading.Thread(target=our_writer)
    writer.start()
    try:  # the first approval alone: it writes the config (commands.ownerAllowFrom, empty until then), which
        # concurrent real CLIs race on; the later two leave the config alone and write the database side by side
        approve = [lambda account=account, code=code: run_real(env, "pairing", "approve", "telegram", code,
                                                                "--account", account) for account, code in codes]
        done = [approve[0](), *run_side_by_side(approve[1:])]
        results = [(p.returncode, p.stdout, p.stderr) for p in done]
    finally:
        stop.set()
        writer.join(60)
    assert errors == [] and writes[0] > 10
    assert [r[0] for r in results] == [0, 0, 0], results
    allowed = rows(db, "SELECT account_id, entry FROM channel_pairing_allow_entries WHERE channel_key = 'telegram' "
                       "ORDER BY account_id")
    assert allowed == [(f"acct{n}", f"sender{n}") for n in range(3)]
    (irc_allowed,) = rows(db, "SELECT count(*) FROM channel_pairing_allow_entries WHERE channel_key = 'irc'")[0]
    assert irc_allowed == writes[0]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]

