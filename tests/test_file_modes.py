"""Secrets stay the owner's: state files 0600 (SQLite side files too), directories 0700, sockets 0600, agent
ids that never name a path outside `agents/`, and a config others can read is said once in the log and
tightened by `doctor --fix`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from test_gateway_protocol import gw_config

from conftest import wait_for
from openclaw_sup.config import sqlitedb
from openclaw_sup.config.paths import ensure_private_dir


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_sqlite_files_and_side_files_are_private_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db_path = ensure_private_dir(tmp_path / "agents" / "main" / "agent") / "openclaw-agent.sqlite"
        db = sqlitedb.connect(db_path)
        db.execute("CREATE TABLE t(x)")
        db.execute("INSERT INTO t VALUES (1)")
        side = [db_path.with_name(db_path.name + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in side)
        assert {p.name: mode(p) for p in (db_path, *side)} == {p.name: 0o600 for p in (db_path, *side)}
        db.close()
    finally:
        os.umask(old)
    for d in (tmp_path / "agents", tmp_path / "agents" / "main", tmp_path / "agents" / "main" / "agent"):
        assert mode(d) == 0o700, d


def test_make_private_tightens_a_store_opened_elsewhere(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    for p in (db, tmp_path / "x.sqlite-wal", tmp_path / "x.sqlite-shm"):
        p.write_bytes(b"")
        p.chmod(0o644)
    sqlitedb.make_private(db)
    assert {mode(p) for p in tmp_path.iterdir()} == {0o600}


def test_sockets_are_private_and_a_loose_config_is_said_once(gateway_factory) -> None:
    g = gateway_factory({"kinds": []}, config=gw_config()).start()
    run = g.state_dir / "run"
    assert mode(run) == 0o700 and mode(run / "bus.sock") == 0o600 and mode(run / "ctl.sock") == 0o600
    config = g.state_dir / "openclaw.json"
    config.chmod(0o644)
    line = f"config file {config} holds secrets but others may read it (mode 0644)"
    wait_for(lambda: line in g.log_text(), 10, what="the loose config said")
    config.chmod(0o640)
    wait_for(lambda: "(mode 0640)" in g.log_text(), 10, what="a new loose mode said")
    config.chmod(0o600)
    assert g.log_text().count(line) == 1, "said once, not every second"
    config.chmod(0o644)
    res = g.run_cli("doctor", "--fix", "--non-interactive")
    assert mode(config) == 0o600, res.stdout + res.stderr
    assert f"chmod 600 {config}" in res.stdout


def test_doctor_fix_tightens_agent_dirs_and_databases(gateway_factory) -> None:
    g = gateway_factory({"kinds": []}, config=gw_config())
    agent = g.state_dir / "agents" / "main" / "agent"
    agent.mkdir(parents=True)
    for d in (g.state_dir / "agents", g.state_dir / "agents" / "main", agent):
        d.chmod(0o755)
    db = agent / "openclaw-agent.sqlite"
    for p in (db, agent / "openclaw-agent.sqlite-wal", agent / "openclaw-agent.sqlite-shm"):
        p.write_bytes(b"")
        p.chmod(0o644)
    res = g.run_cli("doctor", "--fix", "--non-interactive")
    for d in (g.state_dir / "agents", g.state_dir / "agents" / "main", agent):
        assert mode(d) == 0o700, (d, res.stdout)
    assert {mode(p) for p in agent.iterdir()} == {0o600}, res.stdout


def test_agent_ids_never_leave_the_agents_directory() -> None:
    from openclaw_sup.config.paths import normalize_agent_id
    from openclaw_sup.workers.agent.service import agent_of

    assert agent_of(None, "../../etc") == "etc" and agent_of(None, "a\x00b") == "a-b"
    assert agent_of("agent:..:main") == "main" and agent_of("agent:x/y:main") == "x-y"
    assert agent_of(None, "Ops") == "Ops" and agent_of("agent:work:main") == "work"
    assert normalize_agent_id("  ") == "main" and len(normalize_agent_id("x" * 99)) == 64
