"""The exec approvals document (upstream's table and text), the policy decision, and bounded command runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from openclaw_sup.config import exec_approvals, exec_policy
from openclaw_sup.config.exec_approvals import ApprovalsError, ApprovalsStore
from openclaw_sup.workers.boundedrun import run_bounded

UPSTREAM_COLUMNS = ["config_key", "raw_json", "socket_path", "has_socket_token", "default_security", "default_ask",
                    "default_ask_fallback", "auto_allow_skills", "agent_count", "allowlist_count", "updated_at_ms"]


def test_document_is_stored_as_upstream_does(tmp_path: Path) -> None:
    with ApprovalsStore(tmp_path) as store:
        snap = store.ensure()
    db = sqlite3.connect(tmp_path / "state" / "openclaw.sqlite")
    cols = [r[1] for r in db.execute("PRAGMA table_info(exec_approvals_config)")]
    assert cols == UPSTREAM_COLUMNS
    assert "STRICT" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'exec_approvals_config'").fetchone()[0]
    key, raw, sock, has_token = db.execute("SELECT config_key, raw_json, socket_path, has_socket_token "
                                           "FROM exec_approvals_config").fetchone()
    assert key == "current" and has_token == 1 and sock == str(tmp_path / "exec-approvals.sock")
    assert raw.endswith("}\n") and raw.startswith('{\n  "version": 1,\n  "socket": {\n')
    assert snap.hash == hashlib.sha256(raw.encode()).hexdigest()
    assert snap.path == f"{tmp_path}/state/openclaw.sqlite#exec_approvals_config"
    doc = json.loads(raw)
    assert list(doc) == ["version", "socket", "defaults", "agents"] and len(doc["socket"]["token"]) == 32
    assert "token" not in snap.payload()["file"]["socket"]


def test_replace_is_compare_and_swap(tmp_path: Path) -> None:
    with ApprovalsStore(tmp_path) as store:
        first = store.ensure()
        with pytest.raises(ApprovalsError, match="base hash required"):
            store.replace({"version": 1}, None)
        new = store.replace({"version": 1, "defaults": {"security": "allowlist", "ask": "on-miss", "bogus": 1},
                             "agents": {"default": {"allowlist": ["/usr/bin/uname", ""]}}}, first.hash)
        with pytest.raises(ApprovalsError, match="changed since last load"):
            store.replace({"version": 1}, first.hash)
        assert new.file["defaults"] == {"security": "allowlist", "ask": "on-miss"}
        entry = new.file["agents"]["main"]["allowlist"]
        assert [e["pattern"] for e in entry] == ["/usr/bin/uname"] and entry[0]["id"]
        assert new.file["socket"]["token"] == first.file["socket"]["token"]  # kept across a replace
        row = sqlite3.connect(store.path).execute("SELECT default_security, default_ask, agent_count, "
                                                  "allowlist_count FROM exec_approvals_config").fetchone()
        assert row == ("allowlist", "on-miss", 1, 1)
        with pytest.raises(ApprovalsError, match="version"):
            store.replace({"version": 2}, new.hash)


def test_unreadable_document_fails_closed(tmp_path: Path) -> None:
    with ApprovalsStore(tmp_path) as store:
        store.ensure()
        store._db.execute("UPDATE exec_approvals_config SET raw_json = '{broken'")
        snap = store.read()
    decision = exec_policy.decide(snap.file, "main", "echo hi")
    assert not decision.allowed and decision.message == exec_policy.SECURITY_DENY


def doc(**defaults: str) -> dict:
    agents = {"*": {"allowlist": [{"id": "a", "pattern": "/usr/bin/uname"}]},
              "main": {"allowlist": [{"id": "b", "pattern": "ech?"}]}}
    return {"version": 1, "defaults": defaults, "agents": agents}


def test_decisions_follow_upstream_rules() -> None:
    full = exec_policy.decide({"version": 1}, "main", "rm -rf /nonexistent-dir")
    assert full.allowed  # an unconfigured host is full/off, as upstream
    allow = doc(security="allowlist", ask="off")
    assert exec_policy.decide(allow, "main", "uname -s && echo ok").allowed
    miss = exec_policy.decide(allow, "main", "uname -s | wc -c")
    assert not miss.allowed and miss.message == "SYSTEM_RUN_DENIED: allowlist miss" and not miss.needs_approval
    assert not exec_policy.decide(allow, "other", "echo hi").allowed  # `main`'s entries are main's alone
    ask = doc(security="allowlist", ask="on-miss")
    pending = exec_policy.decide(ask, "main", "id")
    assert pending.message == "SYSTEM_RUN_DENIED: approval required" and pending.needs_approval
    assert exec_policy.decide(ask, "main", "id", approved=True).allowed
    assert exec_policy.decide(ask, "main", "uname").allowed
    assert not exec_policy.decide(ask, "main", "echo $(id)").allowed  # substitution cannot be analysed: a miss
    always = exec_policy.decide(doc(ask="always"), "main", "uname")
    assert always.needs_approval
    denied = exec_policy.decide(doc(security="deny"), "main", "uname", approved=True)
    assert not denied.allowed and denied.message == "SYSTEM_RUN_DISABLED: security=deny"
    # the caller may only tighten: requested allowlist on a full host still needs a match
    assert not exec_policy.decide({"version": 1}, "main", "id", requested_security="allowlist").allowed


def test_ask_fallback() -> None:
    pending = exec_policy.decide(doc(security="allowlist", ask="on-miss"), "main", "id")
    assert not exec_policy.fallback(pending).allowed
    pending_full = exec_policy.decide(doc(security="allowlist", ask="on-miss", askFallback="full"), "main", "id")
    assert exec_policy.fallback(pending_full).allowed
    listed = exec_policy.decide(doc(ask="always", askFallback="allowlist"), "main", "uname")
    assert exec_policy.fallback(listed).allowed


def test_allow_always_binds_argv_and_cwd(tmp_path: Path) -> None:
    base = doc(security="allowlist", ask="on-miss")
    first = exec_policy.decide(base, "main", "id -u", cwd=str(tmp_path))
    granted = exec_policy.allow_always(json.loads(json.dumps(base)), "main", first.analysis, str(tmp_path))
    entry = granted["agents"]["main"]["allowlist"][-1]
    assert entry["source"] == "allow-always" and entry["argPattern"].startswith("sha256:cwd-argv:v1:")
    assert exec_policy.decide(granted, "main", "id -u", cwd=str(tmp_path)).allowed
    assert not exec_policy.decide(granted, "main", "id -g", cwd=str(tmp_path)).allowed
    assert not exec_policy.decide(granted, "main", "id -u", cwd="/").allowed


def test_glob_patterns() -> None:
    seg = exec_policy.Segment(["rg", "x"], "/opt/tools/v2/bin/rg")
    assert exec_policy.entry_matches({"pattern": "/opt/**/bin/rg"}, seg, None)
    assert not exec_policy.entry_matches({"pattern": "/opt/*/bin/rg"}, seg, None)
    assert exec_policy.entry_matches({"pattern": "rg", "argPattern": "^x$"}, seg, None)
    assert not exec_policy.entry_matches({"pattern": "rg"}, exec_policy.Segment(["./rg"], "/tmp/rg"), None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.live  # runs commands
def test_bounded_run_cuts_a_gigabyte_of_output() -> None:
    t0 = time.monotonic()
    res = run(run_bounded(["/bin/sh", "-c", "yes 0123456789abcdef | head -c 1073741824"], timeout_s=60,
                          max_output_bytes=4 * 1024 * 1024))
    assert res.output_capped and not res.success
    assert 4 * 1024 * 1024 < res.stdout_bytes < 64 * 1024 * 1024
    assert len(res.stdout) <= 64 * 1024
    assert "output exceeded" in res.describe(60, 4 * 1024 * 1024)
    assert time.monotonic() - t0 < 30


@pytest.mark.live  # runs commands
def test_bounded_run_kills_a_command_that_never_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    res = run(run_bounded(["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout_s=1.0))
    assert res.timed_out and "timed out after 1s" in res.describe(1.0, 1)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command's background child survived the group kill")


@pytest.mark.live  # runs commands
def test_bounded_run_reports_exit_and_spawn_errors() -> None:
    ok = run(run_bounded(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10))
    assert (ok.exit_code, ok.stdout, ok.stderr) == (3, "out\n", "err\n")
    assert ok.describe(10, 1) == "command exited with code 3"
    missing = run(run_bounded(["/nonexistent/binary"], timeout_s=5))
    assert missing.spawn_error and "cannot start" in missing.spawn_error


def test_render_is_upstream_text() -> None:
    assert exec_approvals.render({"version": 1, "socket": {}, "defaults": {}, "agents": {}}) == (
        '{\n  "version": 1,\n  "socket": {},\n  "defaults": {},\n  "agents": {}\n}\n')
