"""Whether one host command may run: the host's approvals document against the command (upstream's rules).

The effective policy is the stricter of what the caller asks for (`tools.exec`, the tool call's `ask`) and
the host document (its `defaults`, the `*` agent, the named agent). A command is split into its top-level
segments (`a && b | c`); every segment's executable must match an allowlist entry for `allowlist` security.
Constructs that cannot be analysed safely (command substitution, backticks, process substitution) make the
analysis fail, which counts as a miss. `ask: always` always asks; `ask: on-miss` asks on a miss under
`allowlist`; `deny` never runs anything.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import time
import uuid
from dataclasses import field
from typing import Any

from openclaw_sup.config.exec_approvals import ASK, DEFAULTS, SECURITY
from openclaw_sup.config.record import record

ALLOWLIST_MISS = "SYSTEM_RUN_DENIED: allowlist miss"
APPROVAL_REQUIRED = "SYSTEM_RUN_DENIED: approval required"
SECURITY_DENY = "SYSTEM_RUN_DISABLED: security=deny"
ARGV_HASH_PREFIX = "sha256:cwd-argv:v1:"
_OPERATORS = {"&&", "||", ";", "|", "&", "|&"}
_UNSAFE = ("$(", "`", "<(", ">(")


def stricter_security(a: str, b: str) -> str:
    return a if SECURITY.index(a) <= SECURITY.index(b) else b


def stricter_ask(a: str, b: str) -> str:
    return a if ASK.index(a) >= ASK.index(b) else b


@record(frozen=True)
class HostPolicy:
    security: str
    ask: str
    ask_fallback: str
    allowlist: list[dict[str, Any]]


def host_policy(doc: dict[str, Any], agent_id: str | None) -> HostPolicy:
    """The host document resolved for one agent: defaults, then the `*` agent, then the agent itself."""
    merged: dict[str, Any] = {**DEFAULTS, **(doc.get("defaults") or {})}
    agents = doc.get("agents") or {}
    allowlist: list[dict[str, Any]] = []
    for key in ("*", agent_id or "main"):
        agent = agents.get(key) if isinstance(agents.get(key), dict) else {}
        merged.update({k: agent[k] for k in ("security", "ask", "askFallback") if k in agent})
        allowlist += [e for e in agent.get("allowlist") or [] if isinstance(e, dict)]
    return HostPolicy(merged["security"], merged["ask"], merged["askFallback"], allowlist)


@record(frozen=True)
class Segment:
    argv: list[str]
    resolved: str | None


@record(frozen=True)
class Analysis:
    ok: bool
    segments: list[Segment] = field(default_factory=list)
    reason: str = ""


def resolve_executable(name: str, cwd: str | None, path_env: str | None) -> str | None:
    if "/" in name:
        full = os.path.normpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(name)))
        return full if os.path.isfile(full) else None
    for d in (path_env if path_env is not None else os.environ.get("PATH", "")).split(os.pathsep):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def analyse(command: str, cwd: str | None = None, path_env: str | None = None) -> Analysis:
    """Split a shell command into its top-level simple commands, or say why it cannot be analysed."""
    if any(token in command for token in _UNSAFE):
        return Analysis(False, reason="command substitution")
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        return Analysis(False, reason=f"unparseable ({exc})")
    segments: list[Segment] = []
    current: list[str] = []
    for tok in [*tokens, ";"]:
        if tok in _OPERATORS:
            if current:
                words = [w for w in current if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)] or current
                segments.append(Segment(words, resolve_executable(words[0], cwd, path_env)))
            elif tok != ";":
                return Analysis(False, reason="empty pipeline segment")
            current = []
        elif tok in ("(", ")"):
            return Analysis(False, reason="subshell")
        else:
            current.append(tok)
    return Analysis(bool(segments), segments, "" if segments else "empty command")


def argv_hash(cwd: str | None, argv: list[str]) -> str:
    blob = "\0".join([cwd or "", *argv]).encode()
    return ARGV_HASH_PREFIX + hashlib.sha256(blob).hexdigest()


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def entry_matches(entry: dict[str, Any], seg: Segment, cwd: str | None) -> bool:
    pattern = str(entry.get("pattern") or "").strip()
    if not pattern:
        return False
    exe = seg.argv[0]
    if "/" in pattern or pattern.startswith("~"):
        if seg.resolved is None or not _glob_regex(os.path.expanduser(pattern)).match(seg.resolved):
            return False
    elif "/" in exe or not fnmatch.fnmatchcase(exe.lower(), pattern.lower()):
        return False
    arg_pattern = entry.get("argPattern")
    if not isinstance(arg_pattern, str) or not arg_pattern:
        return True
    if arg_pattern.startswith(ARGV_HASH_PREFIX):
        return arg_pattern == argv_hash(cwd, seg.argv)
    try:
        return re.search(arg_pattern, " ".join(seg.argv[1:])) is not None
    except re.error:
        return False


@record(frozen=True)
class Decision:
    """The outcome for one command: `allowed`, or the denial `message`; `needs_approval` when an operator's
    allow-once/allow-always would let it run."""

    allowed: bool
    message: str | None
    needs_approval: bool
    security: str
    ask: str
    ask_fallback: str
    analysis: Analysis
    matched: list[dict[str, Any]]


def decide(doc: dict[str, Any], agent_id: str | None, command: str, *, cwd: str | None = None,
           requested_security: str = "full", requested_ask: str = "off", path_env: str | None = None,
           approved: bool = False) -> Decision:
    host = host_policy(doc, agent_id)
    security = stricter_security(requested_security if requested_security in SECURITY else "full", host.security)
    ask = stricter_ask(requested_ask if requested_ask in ASK else "off", host.ask)
    analysis = analyse(command, cwd, path_env)
    matched: list[dict[str, Any]] = []
    satisfied = analysis.ok
    for seg in analysis.segments:
        hit = next((e for e in host.allowlist if entry_matches(e, seg, cwd)), None)
        if hit is None:
            satisfied = False
        else:
            matched.append(hit)

    def result(allowed: bool, message: str | None, needs: bool = False) -> Decision:
        return Decision(allowed, message, needs, security, ask, host.ask_fallback, analysis, matched)

    if security == "deny":
        return result(False, SECURITY_DENY)
    needs_ask = ask == "always" or (ask == "on-miss" and security == "allowlist" and not satisfied)
    if needs_ask and not approved:
        return result(False, APPROVAL_REQUIRED, True)
    if security == "allowlist" and not satisfied and not approved:
        return result(False, ALLOWLIST_MISS)
    return result(True, None)


def fallback(decision: Decision) -> Decision:
    """No operator answered in time: `askFallback` decides (deny, allowlist only, or full)."""
    if decision.ask_fallback == "full":
        return Decision(True, None, False, decision.security, decision.ask, decision.ask_fallback,
                        decision.analysis, decision.matched)
    satisfied = decision.analysis.ok and len(decision.matched) == len(decision.analysis.segments)
    if decision.ask_fallback == "allowlist" and satisfied:
        return Decision(True, None, False, decision.security, decision.ask, decision.ask_fallback,
                        decision.analysis, decision.matched)
    return Decision(False, APPROVAL_REQUIRED, False, decision.security, decision.ask, decision.ask_fallback,
                    decision.analysis, decision.matched)


def allow_always(doc: dict[str, Any], agent_id: str | None, analysis: Analysis, cwd: str | None) -> dict[str, Any]:
    """Add the generated entries an `allow-always` decision mints: each segment's resolved binary, bound to
    its exact arguments and working directory."""
    agents = doc.setdefault("agents", {})
    agent = agents.setdefault(agent_id or "main", {})
    entries = agent.setdefault("allowlist", [])
    for seg in analysis.segments:
        if seg.resolved is None:
            continue
        arg = argv_hash(cwd, seg.argv)
        if any(e.get("pattern") == seg.resolved and e.get("argPattern") == arg for e in entries):
            continue
        entries.append({"id": str(uuid.uuid4()), "pattern": seg.resolved, "argPattern": arg,
                        "source": "allow-always", "lastUsedAt": int(time.time() * 1000),
                        "lastResolvedPath": seg.resolved})
    return doc


def note_use(doc: dict[str, Any], matched: list[dict[str, Any]], command: str) -> dict[str, Any] | None:
    """Stamp `lastUsedAt` / `lastUsedCommand` on the entries that let a command run (None: nothing to do)."""
    ids = {e.get("id") for e in matched if e.get("id")}
    if not ids:
        return None
    now = int(time.time() * 1000)
    for agent in (doc.get("agents") or {}).values():
        for entry in agent.get("allowlist") or [] if isinstance(agent, dict) else []:
            if entry.get("id") in ids:
                entry["lastUsedAt"] = now
                if entry.get("source") != "allow-always":
                    entry["lastUsedCommand"] = command[:500]
    return doc
