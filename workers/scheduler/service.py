"""The scheduler worker: opens the store, starts the engine (`engine.py`) and serves its RPCs (`rpc.py`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from openclaw_sup.config import statedb
from openclaw_sup.workers.runtime import WorkerContext
from openclaw_sup.workers.scheduler.engine import Engine
from openclaw_sup.workers.scheduler.rpc import register_methods
from openclaw_sup.workers.scheduler.store import Store, default_store_key


def store_key(state_dir: Path, cron: Any) -> str:
    """Upstream's key for the cron store: the absolute path of `cron.store` (default `<stateDir>/cron/jobs.json`)."""
    configured = cron.get("store") if isinstance(cron, dict) else None
    if isinstance(configured, str) and configured.strip():
        return os.path.abspath(os.path.expanduser(configured.strip()))
    return default_store_key(state_dir)


async def main(ctx: WorkerContext) -> None:
    path = statedb.state_db_path(ctx.state_dir())
    try:
        store = Store(path, store_key=store_key(ctx.state_dir(), ctx.options.get("cron")))
    except Exception as exc:
        ctx.log.error("cron: cannot open the store at %s: %s: %s", path, type(exc).__name__, exc)
        raise
    engine = Engine(ctx, store)
    try:
        register_methods(ctx, engine)
        await engine.start()
        ctx.when_settled(engine.release_memory)
        ctx.ready()
        await ctx.stopping.wait()
        await engine.stop()
    finally:
        store.close()
