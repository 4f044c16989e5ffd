"""State files of an older upstream release that upstream's `openclaw doctor --fix` imports into its databases.

Before its SQLite state database, upstream kept cron jobs, DM pairing, device pairing, sessions and exec
approvals in JSON files under the state dir. The doctor of the release whose schema we speak imports them and
removes (or renames `.migrated`) each source; a file still there was never imported. We do not import them
ourselves: the gateway refuses to start while one is present, naming the files and `openclaw doctor --fix`,
rather than run with those jobs, approvals and transcripts silently missing.
"""

from __future__ import annotations

from pathlib import Path

FIX = "run `openclaw doctor --fix` (the real CLI imports them into state/openclaw.sqlite), then start again"

_FILES = ("cron/jobs.json", "devices/paired.json", "devices/pending.json", "nodes/paired.json", "nodes/pending.json",
          "exec-approvals.json", "sessions/sessions.json", "tasks/runs.sqlite", "flows/registry.sqlite")
_GLOBS = ("credentials/*-pairing.json", "credentials/*-allowFrom.json", "agents/*/sessions/sessions.json",
          "agents/*/sessions/*.jsonl", "sessions/*.jsonl", "cron/runs/*.jsonl")


def find(state_dir: Path) -> list[str]:
    """The legacy files present, relative to the state dir, sorted."""
    found = {name for name in _FILES if (state_dir / name).is_file()}
    for pattern in _GLOBS:
        found.update(str(p.relative_to(state_dir)) for p in state_dir.glob(pattern) if p.is_file())
    return sorted(found)


def problem(state_dir: Path) -> str | None:
    files = find(state_dir)
    if not files:
        return None
    shown = ", ".join(files[:6]) + (f" and {len(files) - 6} more" if len(files) > 6 else "")
    return f"state from an older OpenClaw release in {state_dir} was never imported ({shown}); {FIX}"
