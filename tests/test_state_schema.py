"""Upstream's state files as we create them: the same schema as the real CLI writes, refusal of what we must not
use (older, newer, foreign, legacy JSON state) naming the fix, and owner-only files including SQLite's side files.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from upstream_state import EchoModel, cli_env, json_out, ok, rows, run_real, schema

from conftest import BIN, free_port, wait_for
from openclaw_sup.config import statedb
from openclaw_sup.config.pairing_store import PairingStore
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.workers.agent.store import AgentStore, db_path
from openclaw_sup.workers.scheduler.store import Store

META = "SELECT role, schema_version, agent_id, app_version FROM schema_meta WHERE meta_key = 'primary'"


def pragmas(path: Path) -> tuple[int, int, str]:
    return rows(path, "PRAGMA user_version")[0][0], rows(path, "PRAGMA auto_vacuum")[0][0], \
        rows(path, "PRAGMA journal_mode")[0][0]


@pytest.mark.live
def test_state_database_is_the_one_the_real_cli_creates(tmp_path: Path) -> None:
    ours = tmp_path / "ours" / "state" / "openclaw.sqlite"
    statedb.open_state_db(ours).close()
    real_state = tmp_path / "real"
    env = cli_env(tmp_path / "home", real_state, real_state / "openclaw.json")
    ok(run_real(env, "pairing", "list", "telegram"))
    theirs = real_state / "state" / "openclaw.sqlite"
    mine, real = schema(ours), schema(theirs)  # on a drift: scripts/upstream-schema rewrites the shipped DDL
    assert len(real) > 200 and sorted(mine) == sorted(real)
    assert [name for name in real if mine[name] != real[name]] == []
    assert pragmas(ours) == pragmas(theirs) == (18, 2, "wal")
    assert rows(ours, META) == rows(theirs, META) == [("global", 18, None, "2026.9.6")]


@pytest.mark.live
def test_agent_database_is_the_one_the_real_cli_creates(tmp_path: Path) -> None:
    model = EchoModel()
    try:
        real_state = tmp_path / "real"
        real_state.mkdir()
        (real_state / "openclaw.json").write_text(json.dumps({
            "gateway": {"mode": "local"}, "models": {"providers": {"loop": model.provider()}},
            "agents": {"defaults": {"model": "loop/m1"}}}))
        env = cli_env(tmp_path / "home", real_state, real_state / "openclaw.json")
        ok(run_real(env, "agent", "--local", "--agent", "main", "--message", "hello"))
    finally:
        model.close()
    assert model.requests >= 1
    theirs = real_state / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    ours = db_path(tmp_path / "ours", "main")
    statedb.open_agent_db(ours, "main").close()
    mine, real = schema(ours), schema(theirs)
    assert len(real) > 100 and sorted(mine) == sorted(real)
    assert [name for name in real if mine[name] != real[name]] == []
    assert pragmas(ours) == pragmas(theirs) == (23, 2, "wal")
    assert rows(ours, META) == rows(theirs, META) == [("agent", 23, "main", "2026.9.6")]
    contract = "SELECT id, main_key, canonical_ready FROM session_key_contract"
    assert rows(ours, contract) == rows(theirs, contract) == [(1, "main", None)]


def _database(path: Path, version: int, role: str | None = "global", agent: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS schema_meta (meta_key TEXT PRIMARY KEY, role TEXT, schema_version "
               "INTEGER, agent_id TEXT, app_version TEXT, created_at INTEGER, updated_at INTEGER)")
    if role is not None:
        db.execute("INSERT INTO schema_meta VALUES ('primary', ?, ?, ?, 'x', 0, 0)", (role, version, agent))
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


class Start:
    def __init__(self, returncode: int | None, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


def start_ours(state: Path) -> Start:
    """Our gateway on `state`: a refused start exits at once (its code and message); one that starts is stopped
    again once its control socket answers (returncode None)."""
    (state / "openclaw.json").write_text(json.dumps({"gateway": {"mode": "local"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env.update(HOME=str(state.parent), OPENCLAW_STATE_DIR=str(state), OPENCLAW_SKIP_CRON="1",
               OPENCLAW_SKIP_CHANNELS="1")
    err = state.parent / "start-stderr.txt"
    with err.open("w") as out:
        proc = subprocess.Popen([str(BIN), "gateway", "--port", str(free_port())], env=env, stdout=subprocess.DEVNULL,
                                stderr=out, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or (state / "run" / "ctl.sock").exists(), 30,
                 what="the gateway to start or refuse")
        code = proc.poll()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return Start(code, err.read_text())


@pytest.mark.parametrize(("version", "role", "agent", "expected"), [
    (12, "global", None, "uses schema version 12, older than 18; run `openclaw doctor --fix`"),
    (19, "global", None, "uses schema version 19, newer than 18"),
    (0, None, None, "has no schema ownership metadata (schema version 0); run `openclaw doctor --fix`"),
    (18, "agent", "main", "belongs to agent main, not the shared state"),
])
@pytest.mark.live
def test_an_unusable_state_database_blocks_the_start_naming_the_fix(tmp_path: Path, version: int, role: str | None,
                                                                     agent: str | None, expected: str) -> None:
    state = tmp_path / "state-dir"
    path = state / "state" / "openclaw.sqlite"
    _database(path, version, role, agent)
    before = path.read_bytes()
    with pytest.raises(statedb.StateDbError, match="state database") as err:
        PairingStore(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    run = start_ours(state)
    assert run.returncode == 78 and f"Gateway start blocked: the state database {path}" in run.stderr
    assert expected in run.stderr
    assert path.read_bytes() == before  # nothing written into a database we refused


@pytest.mark.live
def test_an_agent_database_of_another_owner_or_version_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state-dir"
    path = db_path(state, "main")
    _database(path, 23, "agent", "ops")
    with pytest.raises(statedb.StateDbError, match="belongs to agent ops, not agent main"):
        AgentStore(path)
    run = start_ours(state)
    assert run.returncode == 78 and "belongs to agent ops, not agent main" in run.stderr
    path.unlink()
    _database(path, 17, "agent", "main")
    run = start_ours(state)
    assert run.returncode == 78 and "uses schema version 17, older than 23; run `openclaw doctor --fix`" in run.stderr


@pytest.mark.live
def test_legacy_json_state_is_refused_until_the_real_doctor_imports_it(tmp_path: Path) -> None:
    state = tmp_path / "state-dir"
    (state / "credentials").mkdir(parents=True)
    (state / "cron").mkdir()
    now = "2030-01-01T00:00:00.000Z"
    (state / "credentials" / "telegram-pairing.json").write_text(json.dumps({"version": 1, "requests": [
        {"id": "42", "code": "ABCDEFGH", "createdAt": now, "lastSeenAt": now, "meta": {"accountId": "default"}}]}))
    (state / "credentials" / "telegram-allowFrom.json").write_text(json.dumps({"version": 1, "allowFrom": ["7"]}))
    job = {"id": "legacy-1", "name": "legacy", "enabled": True, "createdAtMs": 1, "sessionTarget": "main",
           "schedule": {"kind": "every", "everyMs": 3_600_000}, "wakeMode": "now",
           "payload": {"kind": "systemEvent", "text": "ping"}, "state": {}}
    (state / "cron" / "jobs.json").write_text(json.dumps({"version": 1, "jobs": [job]}))
    run = start_ours(state)
    assert run.returncode == 78
    assert ("state from an older OpenClaw release in " in run.stderr and "credentials/telegram-pairing.json" in
            run.stderr and "cron/jobs.json" in run.stderr and "openclaw doctor --fix" in run.stderr)
    assert not (state / "state" / "openclaw.sqlite").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env.update(HOME=str(tmp_path), OPENCLAW_STATE_DIR=str(state))
    doctor = subprocess.run([str(BIN), "doctor", "--json"], env=env, capture_output=True, text=True, timeout=60)
    found = {f["checkId"]: f for f in json.loads(doctor.stdout)["findings"]}
    assert found["core/doctor/state-legacy"]["severity"] == "error"

    ok(run_real(cli_env(tmp_path, state, state / "openclaw.json"), "doctor", "--non-interactive", "--fix"))
    store = PairingStore(state / "state" / "openclaw.sqlite")
    try:
        assert [(r.code, r.sender_id) for r in store.pending("telegram")] == [("ABCDEFGH", "42")]
        assert store.is_allowed("telegram", "default", "7")
    finally:
        store.close()
    jobs = Store(state / "state" / "openclaw.sqlite").jobs()
    assert [j["id"] for j in jobs if not str(j.get("declarationKey") or "").startswith("heartbeat:")] == ["legacy-1"]
    run = start_ours(state)
    assert run.returncode is None and "Gateway start blocked" not in run.stderr


def test_every_database_and_its_side_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / "state-dir"
        pairing = PairingStore(statedb.state_db_path(state))
        pairing.request("irc", "default", "alice")
        agent = AgentStore(db_path(state, "main"))
        agent.append("agent:main:main", "user", "hello")
        sched = Store(statedb.state_db_path(state))
        sched.add_event("main", "ping", 1)
        files = [p for p in state.rglob("*") if p.is_file()]
        dirs = [state / "state", state / "agents" / "main", state / "agents" / "main" / "agent"]
        assert {p.name for p in files} >= {"openclaw.sqlite", "openclaw.sqlite-wal", "openclaw.sqlite-shm",
                                           "openclaw-agent.sqlite-wal", "openclaw-sup-runs.sqlite",
                                           "openclaw-sup-scheduler.sqlite-wal"}
        assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
                if stat.S_IMODE(p.stat().st_mode) != 0o600} == {}
        assert {str(d): oct(stat.S_IMODE(d.stat().st_mode)) for d in dirs if stat.S_IMODE(d.stat().st_mode) != 0o700} \
            == {}
        for store in (pairing, agent, sched):
            store.close()
    finally:
        os.umask(old)


EARLIER = {  # openclaw-sup's own files before its state was in upstream's format (the schemas those releases wrote)
    "state/openclaw.sqlite": """
        CREATE TABLE channel_pairing_requests (channel TEXT NOT NULL, account_id TEXT NOT NULL, code TEXT NOT NULL,
            sender_id TEXT NOT NULL, sender_name TEXT, chat_id TEXT, created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL, PRIMARY KEY (channel, account_id, sender_id));
        CREATE TABLE channel_pairing_allow_entries (channel TEXT NOT NULL, account_id TEXT NOT NULL,
            sender_id TEXT NOT NULL, approved_at INTEGER NOT NULL, source TEXT, PRIMARY KEY (channel, account_id,
            sender_id));
        INSERT INTO channel_pairing_requests VALUES ('telegram', 'default', 'OLDCODE2', '301', 'bob', NULL, {now},
            {later});
        INSERT INTO channel_pairing_allow_entries VALUES ('telegram', 'default', '300', 5, 'cli');""",
    "agents/main/agent/openclaw-agent.sqlite": """
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_key TEXT NOT NULL, role TEXT NOT NULL,
            text TEXT NOT NULL, ts INTEGER NOT NULL, run_id TEXT);
        CREATE TABLE runs (idem_key TEXT PRIMARY KEY, run_id TEXT NOT NULL, method TEXT NOT NULL, session_key TEXT,
            status TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER, error TEXT, answer BLOB);
        INSERT INTO messages (session_key, role, text, ts, run_id) VALUES
            ('agent:main:main', 'user', 'old question', {now}, 'old-run'),
            ('agent:main:main', 'assistant', 'old answer', {now}, 'old-run');
        INSERT INTO runs VALUES ('agent:old-run', 'old-run', 'agent', 'agent:main:main', 'ok', {now}, {now}, NULL,
            '{{"runId": "old-run", "status": "ok", "summary": "completed"}}');""",
    "state/cron.sqlite": """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, declaration_key TEXT UNIQUE, enabled INTEGER NOT NULL,
            next_run_at_ms INTEGER, updated_at_ms INTEGER NOT NULL, body TEXT NOT NULL);
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, status TEXT NOT NULL,
            started_at_ms INTEGER NOT NULL, finished_at_ms INTEGER, delivery_status TEXT, pgid INTEGER,
            pgid_started REAL, entry TEXT NOT NULL);
        CREATE TABLE system_events (id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, text TEXT NOT NULL,
            ts_ms INTEGER NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO jobs VALUES ('old-job', NULL, 1, {later}, {now}, '{{"id": "old-job", "name": "oldjob",
            "enabled": true, "createdAtMs": {now}, "updatedAtMs": {now}, "schedule": {{"kind": "every",
            "everyMs": 3600000}}, "sessionTarget": "isolated", "wakeMode": "now", "payload": {{"kind": "command",
            "argv": ["true"]}}, "state": {{"nextRunAtMs": {later}, "lastRunStatus": "ok"}}}}');
        INSERT INTO runs VALUES ('old-job-run', 'old-job', 'ok', {now}, {now}, 'not-requested', NULL, NULL,
            '{{"ts": {now}, "jobId": "old-job", "jobName": "oldjob", "action": "finished", "status": "ok",
            "runId": "old-job-run", "runAtMs": {now}, "summary": "old output", "durationMs": 3,
            "completionStatus": "succeeded"}}');""",
    "state/gateway-devices.sqlite": """
        CREATE TABLE paired_devices (device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, roles TEXT NOT NULL,
            scopes TEXT NOT NULL, platform TEXT, device_family TEXT, client_id TEXT, client_mode TEXT,
            display_name TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
        CREATE TABLE pairing_requests (request_id TEXT PRIMARY KEY, device_id TEXT NOT NULL,
            public_key TEXT NOT NULL, role TEXT NOT NULL, scopes TEXT NOT NULL, platform TEXT, device_family TEXT,
            client_id TEXT, client_mode TEXT, display_name TEXT, is_repair INTEGER NOT NULL DEFAULT 0,
            created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
        INSERT INTO paired_devices VALUES ('old-device', 'old-key', '["operator"]', '["operator.read"]', 'linux',
            'desktop', 'openclaw-tui', 'ui', 'Old laptop', {now}, {now});""",
}


def test_openclaw_sups_earlier_files_are_imported_at_the_first_start(gateway_factory) -> None:
    token = "earlier-layout-token-0123456789"
    gw = gateway_factory({"kinds": []}, config={"gateway": {"auth": {"mode": "token", "token": token}},
                                                "agents": {"defaults": {"model": "echo/echo"}}},
                         extra_env={"OPENCLAW_SKIP_CRON": ""})
    now = int(time.time() * 1000)
    for name, script in EARLIER.items():
        path = gw.state_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(script.format(now=now, later=now + 3_600_000))
        db.close()
    gw.start()
    assert "state: moved openclaw-sup's earlier file" in gw.stdout.read_text()
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=token)
    c.connect()
    try:
        history = c.request("chat.history", {"sessionKey": "agent:main:main"})["messages"]
        assert [(m["role"], m["content"][0]["text"]) for m in history] == [("user", "old question"),
                                                                           ("assistant", "old answer")]
        resent = c.request("agent", {"message": "x", "idempotencyKey": "old-run"}, expect_final=True)
        assert resent == {"runId": "old-run", "status": "ok", "summary": "completed"}  # stored, not run again
        assert [j["name"] for j in c.request("cron.list", {})["jobs"] if j["id"] == "old-job"] == ["oldjob"]
        runs = c.request("cron.runs", {"id": "old-job"})["entries"]
        assert [(e["runId"], e["summary"]) for e in runs] == [("old-job-run", "old output")]
    finally:
        c.close()
    listed = gw.run_cli("pairing", "list", "telegram", "--json")
    assert [(r["code"], r["senderId"]) for r in json.loads(listed.stdout)["requests"]] == [("OLDCODE2", "301")]
    db = gw.state_dir / "state" / "openclaw.sqlite"
    assert rows(db, "SELECT entry FROM channel_pairing_allow_entries") == [("300",)]
    assert rows(db, "SELECT device_id, display_name, approved_scopes_json FROM device_pairing_paired") == [
        ("old-device", "Old laptop", '["operator.read"]')]
    for name in ("state/openclaw-sup-pairing.sqlite", "agents/main/agent/openclaw-sup-transcripts.sqlite",
                 "state/cron.sqlite", "state/gateway-devices.sqlite"):
        assert (gw.state_dir / f"{name}.imported").exists() and not (gw.state_dir / name).exists(), name
    sessions = json_out(run_real(cli_env(gw.home), "sessions", "--json"))
    assert [s["key"] for s in sessions["sessions"]] == ["agent:main:main"]
    moved = gw.stdout.read_text().count("state: moved openclaw-sup's earlier file")
    assert moved == 2  # the two at upstream's paths; cron.sqlite and gateway-devices.sqlite are imported in place
    gw.stop()
    gw.start()  # imported once: a restart finds nothing to import again
    assert gw.stdout.read_text().count("state: moved openclaw-sup's earlier file") == moved
    assert rows(db, "SELECT count(*) FROM channel_pairing_requests") == [(1,)]
    assert rows(db, "SELECT count(*) FROM task_runs WHERE source_id = 'old-job'") == [(1,)]
