"""The exec approvals document of one host (the gateway's, or a node's), where upstream keeps it.

`<stateDir>/state/openclaw.sqlite`, table `exec_approvals_config`, singleton row `current`: the JSON document
(`version`, `socket`, `defaults`, per-agent `security`/`ask`/`askFallback`/`allowlist`) as its authoritative
`raw_json` (pretty-printed, newline-terminated, as upstream writes it, so the compare-and-swap hash
`sha256(raw_json)` is the same on both sides), plus the summary columns upstream fills. Readers are the
gateway (`exec.approvals.get|set`), the agent worker and the node host; each write is one IMMEDIATE
transaction, so concurrent writers from several processes never lose an update.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from openclaw_sup.config import statedb
from openclaw_sup.config.record import record

SECURITY = ("deny", "allowlist", "full")
ASK = ("off", "on-miss", "always")
DEFAULTS = {"security": "full", "ask": "off", "askFallback": "deny", "autoAllowSkills": False}
ROW_KEY = "current"



class ApprovalsError(ValueError):
    """A rejected read or write, with upstream's message (clients and the CLI show it as is)."""


CHANGED = "exec approvals changed since last load; re-run exec.approvals.get and retry"
HASH_REQUIRED = "exec approvals base hash required; re-run exec.approvals.get and retry"


def db_path(state_dir: Path) -> Path:
    return Path(state_dir) / "state" / "openclaw.sqlite"


def display_path(state_dir: Path) -> str:
    return f"{db_path(state_dir)}#exec_approvals_config"


def _policy(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    for key, allowed in (("security", SECURITY), ("ask", ASK), ("askFallback", SECURITY)):
        value = raw.get(key).strip() if isinstance(raw.get(key), str) else None
        if value in allowed:
            out[key] = value
    if isinstance(raw.get("autoAllowSkills"), bool):
        out["autoAllowSkills"] = raw["autoAllowSkills"]
    return out


def _allowlist(raw: Any) -> list[dict[str, Any]] | None:
    if not isinstance(raw, list):
        return None
    out = []
    for item in raw:
        if isinstance(item, str) and item.strip():
            item = {"pattern": item.strip()}
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) or not item["pattern"].strip():
            continue
        entry = {k: v for k, v in item.items() if k != "commandText"}
        entry.setdefault("id", str(uuid.uuid4()))
        if entry.get("source") != "allow-always":
            entry.pop("source", None)
        out.append(entry)
    return out


def normalize(doc: Any) -> dict[str, Any]:
    """Upstream's canonical form: version 1, the socket block, sanitized defaults and agents (`default` folds
    into `main`, allowlist strings become `{pattern}` entries with ids, unknown policy values are dropped)."""
    if not isinstance(doc, dict):
        raise ApprovalsError("exec approvals file must be an object")
    if doc.get("version", 1) != 1:
        raise ApprovalsError("version: expected a supported value")
    socket = doc.get("socket") if isinstance(doc.get("socket"), dict) else {}
    agents_in = doc.get("agents") if isinstance(doc.get("agents"), dict) else {}
    agents: dict[str, Any] = {}
    for name, agent in agents_in.items():
        if not isinstance(agent, dict):
            raise ApprovalsError(f"agents entry {name!r}: expected an object")
        clean = {**{k: v for k, v in agent.items() if k not in ("security", "ask", "askFallback", "allowlist")},
                 **_policy(agent)}
        allowlist = _allowlist(agent.get("allowlist"))
        if allowlist:
            clean["allowlist"] = allowlist
        agents["main" if name == "default" and "main" not in agents_in else name] = clean
    sock = {k: socket[k].strip() for k in ("path", "token") if isinstance(socket.get(k), str) and socket[k].strip()}
    return {"version": 1, "socket": sock, "defaults": _policy(doc.get("defaults")), "agents": agents}


def render(doc: dict[str, Any]) -> str:
    """The stored text: two-space indented JSON and a final newline, byte for byte upstream's."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def redacted(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as it may leave the host: the socket token never does."""
    socket = {k: v for k, v in (doc.get("socket") or {}).items() if k != "token"}
    return {**doc, "socket": socket}


def resolved_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **_policy(doc.get("defaults"))}


@record(frozen=True)
class Snapshot:
    path: str
    exists: bool
    file: dict[str, Any]
    hash: str

    def payload(self) -> dict[str, Any]:
        """What `exec.approvals.get|set` and the node's `system.execApprovals.get` answer."""
        return {"path": self.path, "exists": self.exists, "file": redacted(self.file), "hash": self.hash}


class ApprovalsStore:
    """The approvals document of the host whose state dir this is."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = db_path(self.state_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = statedb.open_state_db(self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ApprovalsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db.write():
            yield self._db

    def _read(self, db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT raw_json FROM exec_approvals_config WHERE config_key = ?", (ROW_KEY,)).fetchone()
        return row[0] if row else None

    def _snapshot(self, raw: str | None) -> Snapshot:
        if raw is None:
            empty = {"version": 1, "socket": {}, "defaults": {}, "agents": {}}
            return Snapshot(display_path(self.state_dir), False, empty, digest(render(empty)))
        try:
            doc = normalize(json.loads(raw))
        except (ValueError, ApprovalsError):
            # Fail closed: a document nobody can read must not become "full access" by default.
            doc = {"version": 1, "socket": {}, "defaults": {"security": "deny", "ask": "off",
                                                            "askFallback": "deny"}, "agents": {}}
        return Snapshot(display_path(self.state_dir), True, doc, digest(raw))

    def read(self) -> Snapshot:
        return self._snapshot(self._read(self._db))

    def _write(self, db: sqlite3.Connection, doc: dict[str, Any]) -> Snapshot:
        raw = render(doc)
        defaults = doc.get("defaults") or {}
        agents = doc.get("agents") or {}
        allowlist_count = sum(len(a.get("allowlist") or []) for a in agents.values() if isinstance(a, dict))
        socket = doc.get("socket") or {}
        auto = defaults.get("autoAllowSkills")
        db.execute(
            "INSERT OR REPLACE INTO exec_approvals_config (config_key, raw_json, socket_path, has_socket_token, "
            "default_security, default_ask, default_ask_fallback, auto_allow_skills, agent_count, allowlist_count, "
            "updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ROW_KEY, raw, socket.get("path"), int(bool(socket.get("token"))), defaults.get("security"),
             defaults.get("ask"), defaults.get("askFallback"), None if auto is None else int(auto), len(agents),
             allowlist_count, int(time.time() * 1000)))
        return Snapshot(display_path(self.state_dir), True, doc, digest(raw))

    def _with_socket(self, doc: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        socket = {**((current or {}).get("socket") or {}), **(doc.get("socket") or {})}
        socket.setdefault("path", str(self.state_dir / "exec-approvals.sock"))
        socket.setdefault("token", secrets.token_urlsafe(24))
        return {**doc, "socket": {"path": socket["path"], "token": socket["token"]}}

    def ensure(self) -> Snapshot:
        """The document, written with its defaults first if this host never had one (as upstream does)."""
        with self._tx() as db:
            raw = self._read(db)
            if raw is not None:
                return self._snapshot(raw)
            return self._write(db, self._with_socket({"version": 1, "socket": {}, "defaults": {}, "agents": {}},
                                                     None))

    def replace(self, file: Any, base_hash: Any) -> Snapshot:
        """`approvals set`: replace the document if nobody changed it since `base_hash` was read."""
        doc = normalize(file)
        with self._tx() as db:
            raw = self._read(db)
            current = self._snapshot(raw)
            if raw is None:
                if base_hash and base_hash != current.hash:
                    raise ApprovalsError(CHANGED)
            elif not base_hash:
                raise ApprovalsError(HASH_REQUIRED)
            elif base_hash != current.hash:
                raise ApprovalsError(CHANGED)
            return self._write(db, self._with_socket(doc, current.file if raw is not None else None))

    def update(self, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Snapshot:
        """Read-modify-write under one transaction; `change` returns the new document or None to keep it."""
        with self._tx() as db:
            current = self._snapshot(self._read(db))
            doc = json.loads(json.dumps(current.file))
            new = change(doc)
            if new is None:
                return current
            return self._write(db, self._with_socket(normalize(new), current.file))
