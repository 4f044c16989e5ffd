"""The agent worker's engine: runs (one model call with its transcript), their events, and the RPCs.

A run is a task of its own, so `chat.abort` can cancel it and every request about it (the two-stage `agent`,
a resent duplicate, `agent.wait`) awaits the same outcome. Runs of one session are serialized, and at most
`agents.defaults.maxConcurrent` run at once (upstream's global lane; the others wait in arrival order); cron job
and heartbeat turns take a slot of a lane of their own instead, as upstream's, so background work never holds up
an inbound reply nor waits behind a burst of them. Each agent's
transcripts and runs live in its own SQLite file (workers/agent/store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from openclaw_sup.config.models import ModelConfigError, agent_model, max_concurrent, resolve
from openclaw_sup.config.paths import normalize_agent_id
from openclaw_sup.config.record import record
from openclaw_sup.workers.agent.exec_tool import ExecTool
from openclaw_sup.workers.agent.groupcommit import GroupCommit
from openclaw_sup.workers.agent.listing import Listing
from openclaw_sup.workers.agent.providers import ChatRequest, Completion, ProviderError, call
from openclaw_sup.workers.agent.providers.http import close_pool
from openclaw_sup.workers.agent.store import INTERRUPTED, AgentStore, db_path, now_ms, random_uuid
from openclaw_sup.workers.agent.toolloop import ToolLoopBound, replay, run_loop
from openclaw_sup.workers.groupledger import GroupLedger
from openclaw_sup.workers.keyedlock import KeyedLocks
from openclaw_sup.workers.runtime import Partial, RequestError, WorkerContext

DEFAULT_TIMEOUT_S = 600.0
HISTORY_TURNS = 40
HISTORY_DEFAULT = 200
HISTORY_MAX = 1000
HISTORY_MAX_CHARS = 700_000  # a bus message is at most 1 MiB: older messages beyond this come with hasMore
STOPPED = "the agent worker stopped while this run was in progress"
ABORTED = "aborted"
LAST_ROUTE = "agent:last-route"
MAIN_LANE, CRON_LANE = "main", "cron"
CRON_LANE_SLOTS = 8
"""Upstream's cron budget (a fixed 8): cron job and heartbeat turns at once, beside `maxConcurrent` inbound ones."""



def agent_of(session_key: str | None, explicit: Any = None) -> str:
    """`agent:<agentId>:...` names its agent; otherwise the explicit `agentId`, else `main`; normalized as
    upstream does, since it names a directory (`agents/<id>/`): `../x` or a NUL byte never reach a path."""
    if isinstance(explicit, str) and explicit.strip():
        return normalize_agent_id(explicit)
    if session_key and session_key.startswith("agent:"):
        parts = session_key.split(":")
        if len(parts) >= 3 and parts[1]:
            return normalize_agent_id(parts[1])
    return "main"


def canonical_session(session_key: str, agent_id: str) -> str:
    """Upstream's alias: `main` is the agent's main session `agent:<agentId>:main`."""
    return f"agent:{agent_id}:main" if session_key == "main" else session_key


def _text(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RequestError("INVALID_REQUEST", f"invalid {method} params: {key} must be a non-empty string")
    return value


def _timeout(value: Any, scale: float, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) * scale
    return default


@record
class Outcome:
    status: str  # ok | error | aborted
    text: str = ""
    error: str | None = None
    error_kind: str | None = None
    code: str = "UNAVAILABLE"
    model: str | None = None
    usage: dict[str, int] | None = None
    finish: str = "stop"
    ended_at: int = field(default_factory=now_ms)


@record
class Run:
    run_id: str
    method: str
    agent_id: str
    session_key: str
    idem_key: str | None
    message: str
    model: str | None
    timeout_s: float
    accepted_at: int = field(default_factory=now_ms)
    started_at: int = 0
    done: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None
    agent_seq: int = 0
    chat_seq: int = 0
    text: str = ""
    heartbeat: bool = False
    route: dict[str, Any] | None = None
    fallbacks: tuple[str, ...] = ()
    asked: bool = False  # the question is in the transcript (written at once for a run without a key)
    lane: str = MAIN_LANE
    recorded: asyncio.Future[Any] | None = None  # its start record's commit (a run with a key)


class AgentService:
    def __init__(self, ctx: WorkerContext, root: Path) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.root = root
        opts = ctx.options
        self.agents_cfg: dict[str, Any] = opts.get("agents") if isinstance(opts.get("agents"), dict) else {}
        self.models_cfg: dict[str, Any] = opts.get("models") if isinstance(opts.get("models"), dict) else {}
        self.tools_cfg: dict[str, Any] = opts.get("tools") if isinstance(opts.get("tools"), dict) else {}
        self.exec_groups = GroupLedger(root / "run" / f"exec-groups-{ctx.name}.json")
        swept = self.exec_groups.sweep()
        if swept:
            self.log.warning("killed %d process(es) that exec commands of a previous agent worker left", swept)
        defaults = self.agents_cfg.get("defaults") if isinstance(self.agents_cfg.get("defaults"), dict) else {}
        self.default_timeout = _timeout(defaults.get("timeoutSeconds"), 1.0, DEFAULT_TIMEOUT_S)
        self.stores: dict[str, AgentStore] = {}
        self.grouped: dict[str, GroupCommit] = {}  # each store's turn writes, committed together per loop pass
        self.finishing: dict[str, GroupCommit] = {}  # and the ends of its runs
        self.runs: dict[str, Run] = {}  # active runs by runId
        self.by_key: dict[str, Run] = {}  # active runs by idempotency key
        self.locks = KeyedLocks()  # one run at a time per session
        self.lanes = {MAIN_LANE: asyncio.Semaphore(max_concurrent(self.agents_cfg)),
                      CRON_LANE: asyncio.Semaphore(CRON_LANE_SLOTS)}
        self.waiters: dict[str, asyncio.Event] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.stopping = False
        self.interrupted: list[tuple[str, str, str | None]] = []

    def active_runs(self, session_key: str) -> list[str]:
        return [r.run_id for r in self.runs.values() if r.session_key == session_key]

    def store(self, agent_id: str) -> AgentStore:
        st = self.stores.get(agent_id)
        if st is None:
            st = AgentStore(db_path(self.root, agent_id), agent_id, self.root)
            closed = st.close_interrupted()
            if closed:
                self.log.warning("agent %s: %d run(s) were interrupted by a stop or crash; closed as errors",
                                 agent_id, len(closed))
            self.interrupted += [(agent_id, run_id, key) for run_id, key in closed]
            self.stores[agent_id] = st
            self.grouped[agent_id] = GroupCommit(st.group)
            self.finishing[agent_id] = GroupCommit(st.group_runs)
            if self.ctx.is_ready:
                self.announce_interrupted()
        return st

    # -- answers -------------------------------------------------------------------------------------

    @staticmethod
    def answer(method: str, run_id: str, out: Outcome, started_at: int = 0) -> dict[str, Any]:
        """The final answer of a run for the method that started it (also what a resent key gets back)."""
        if method == "agent":
            if out.status != "ok":
                return {"runId": run_id, "status": "error", "summary": out.error or out.status}
            provider, _, model = (out.model or "").partition("/")
            return {"runId": run_id, "status": "ok", "summary": "completed", "result": {
                "payloads": [{"text": out.text}] if out.text else [],
                "meta": {"durationMs": max(0, out.ended_at - started_at) if started_at else 0,
                         "agentMeta": {"provider": provider, "model": model, "usage": out.usage or {}}}}}
        if method == "chat.send":
            return {"runId": run_id, "status": "ok" if out.status == "ok" else out.status}
        if out.status != "ok":
            return {"status": "error", "error": out.error or out.status}
        return {"status": "ok", "summary": out.text, "model": out.model, "usage": out.usage or {}}

    def stored_answer(self, method: str, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("answer") is not None:
            return row["answer"]
        out = Outcome("error", error=row.get("error") or INTERRUPTED, ended_at=row.get("endedAt") or now_ms())
        return self.answer(method, row["runId"], out, row.get("startedAt") or 0)

    def announce_interrupted(self) -> None:
        """Clients following a run a crash cut short get its end: lifecycle error and a chat error."""
        for agent_id, run_id, session_key in self.interrupted:
            run = Run(run_id, "", agent_id, session_key or f"agent:{agent_id}:main", None, "", None, 0)
            run.agent_seq = run.chat_seq = 1_000_000  # after anything the dead worker may have sent
            self._finish_events(run, Outcome("error", error=INTERRUPTED))
        self.interrupted.clear()

    # -- runs ----------------------------------------------------------------------------------------

    def begin(self, method: str, *, key: str | None, run_id: str, agent_id: str, session_key: str, message: str,
              model: str | None, timeout_s: float, heartbeat: bool = False,
              route: dict[str, Any] | None = None, fallbacks: tuple[str, ...] = (),
              lane: str = MAIN_LANE) -> Run | dict[str, Any]:
        """Start a run, or find the one this idempotency key already started (a Run while it is active, its
        stored answer once it is over: a key never runs twice)."""
        if self.stopping:
            raise RequestError("UNAVAILABLE", "the agent worker is stopping; retry shortly")
        store = self.store(agent_id)
        idem = f"{method}:{key}" if key else None
        if idem is not None and idem in self.by_key:
            return self.by_key[idem]
        run = Run(run_id, method, agent_id, session_key, idem, message, model, timeout_s, heartbeat=heartbeat,
                  route=route, fallbacks=fallbacks, lane=lane)
        if idem is not None:
            if not store.start_run(idem, run_id, method, session_key, run.accepted_at, message, pending=True):
                row = store.run(idem)  # the key ran before: its stored answer (one statement less for every new key)
                return self.stored_answer(method, row) if row else {"runId": run_id, "status": "error"}
            run.recorded = self.finishing[agent_id].queue(lambda: None)  # committed with the runs' ends
        self.runs[run_id] = run
        self.ctx.stats["activeRuns"] = len(self.runs)
        if idem is not None:
            self.by_key[idem] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run), name=f"run {run_id}")
        return run

    async def _drive(self, run: Run) -> None:
        out: Outcome
        try:
            async with self.locks.hold(run.session_key), self.lanes[run.lane]:
                out = await self._execute(run)
        except asyncio.CancelledError:
            out = Outcome("error" if self.stopping else "aborted", text=run.text,
                          error=STOPPED if self.stopping else ABORTED)
            self._finish_events(run, out)
        except Exception as exc:  # a bug here must still end the run, never leave a waiter hanging
            self.log.exception("run %s failed", run.run_id)
            out = Outcome("error", error=f"{type(exc).__name__}: {exc}")
            self._finish_events(run, out)
        finally:
            if not run.asked and run.started_at:  # failed or aborted: the question stays in the transcript
                with contextlib.suppress(Exception):
                    self.store(run.agent_id).append_turn(run.session_key, run.message, None, run.run_id,
                                                         ts=run.started_at)
        if run.idem_key:
            answer = self.answer(run.method, run.run_id, out, run.started_at)
            store, key = self.store(run.agent_id), run.idem_key
            ended = self.finishing[run.agent_id].write(lambda: store.finish_run(
                key, "ok" if out.status == "ok" else "error", out.error, answer, (run.run_id, run.method)))
            # shielded: a cancel now (abort, stop) must not skip what follows, the end every waiter is owed
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(ended)
            self.by_key.pop(run.idem_key, None)
        self.runs.pop(run.run_id, None)  # a resent key or agent.wait finds the run active until its end is stored
        self.ctx.stats["activeRuns"] = len(self.runs)
        self.ctx.busy()  # work done outside a request: settle again once quiet
        if not run.done.done():
            run.done.set_result(out)
        waiter = self.waiters.pop(run.run_id, None)
        if waiter is not None:
            waiter.set()

    def _messages(self, run: Run, store: AgentStore) -> list[dict[str, Any]]:
        messages = replay(store.context(run.session_key, HISTORY_TURNS - (0 if run.asked else 1)))
        if not run.asked:
            messages.append({"role": "user", "content": run.message})
        prompt = self._system_prompt(run.agent_id)
        return [{"role": "system", "content": prompt}, *messages] if prompt else messages

    @staticmethod
    def _record(run: Run, store: AgentStore, message: dict[str, Any]) -> None:
        """A tool round into the transcript, after the run's question (written first if it was not yet)."""
        if not run.asked:
            store.append_turn(run.session_key, run.message, None, run.run_id, ts=run.started_at)
            run.asked = True
        store.append_message(run.session_key, message, run.run_id)

    def _system_prompt(self, agent_id: str) -> str | None:
        for entry in self.agents_cfg.get("list") or ():
            if isinstance(entry, dict) and entry.get("id") == agent_id and isinstance(entry.get("systemPrompt"), str):
                return entry["systemPrompt"]
        return None

    async def _execute(self, run: Run) -> Outcome:
        store = self.store(run.agent_id)
        if run.recorded is not None:  # the model is called only once a resent key would find the run
            await (run.recorded if run.recorded.done() else asyncio.shield(run.recorded))
        run.started_at = now_ms()
        self._agent_event(run, "lifecycle", {"phase": "start", "startedAt": run.started_at})
        if run.idem_key is None:  # no run record to recover it from: the question is written before the model call
            store.append(run.session_key, "user", run.message, run.run_id)
            run.asked = True
        if run.route:
            self.routes[run.session_key] = self.routes[f"{LAST_ROUTE}:{run.agent_id}"] = run.route

        def on_delta(chunk: str) -> None:
            run.text += chunk
            self._agent_event(run, "assistant", {"text": run.text, "delta": chunk})
            self._chat_event(run, "delta", run.text, deltaText=chunk)

        deadline = time.monotonic() + run.timeout_s

        async def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> tuple[Completion, str]:
            left = max(0.1, round(deadline - time.monotonic(), 1))
            return await self.complete(run.agent_id, run.model, messages, left, on_delta,
                                       partial_sent=lambda: bool(run.text), fallbacks=run.fallbacks, tools=tools)

        try:
            loop = await run_loop(model=model, messages=self._messages(run, store), tools=self._tools(run),
                                  emit=lambda stream, data: self._agent_event(run, stream, data),
                                  record=lambda message: self._record(run, store, message),
                                  deadline=deadline)
        except (ModelConfigError, ProviderError, ToolLoopBound) as exc:
            out = Outcome("error", text=run.text, error=str(exc), code=getattr(exc, "code", "UNAVAILABLE"),
                          error_kind=getattr(exc, "kind", "unknown"))
            self.log.warning("run %s (%s) failed: %s", run.run_id, run.session_key, exc)
        else:
            result, ref = loop.completion, loop.ref
            grouped = self.grouped[run.agent_id]
            if run.asked:
                await grouped.write(lambda: store.append(run.session_key, "assistant", result.text, run.run_id,
                                                         model=ref, usage=loop.usage))
            else:
                await grouped.write(lambda: store.append_turn(run.session_key, run.message, result.text, run.run_id,
                                                              model=ref, usage=loop.usage, ts=run.started_at))
                run.asked = True
            out = Outcome("ok", text=result.text, model=ref, usage=loop.usage, finish=result.finish_reason)
        self._finish_events(run, out)
        return out

    def _tools(self, run: Run) -> dict[str, Any]:
        """The tools a run may use: `exec`, unless `tools.deny` (or the agent's own) says otherwise."""
        policies = [self.tools_cfg, *(e.get("tools") for e in self.agents_cfg.get("list") or ()
                                      if isinstance(e, dict) and e.get("id") == run.agent_id)]
        for policy in policies:
            if isinstance(policy, dict) and ("exec" in (policy.get("deny") or ()) or (
                    policy.get("allow") and "exec" not in policy["allow"])):
                return {}
        exec_cfg = self.tools_cfg.get("exec") if isinstance(self.tools_cfg.get("exec"), dict) else {}
        return {"exec": ExecTool(state_dir=self.root, exec_cfg=exec_cfg, agent_id=run.agent_id,
                                 session_key=run.session_key, run_id=run.run_id, request=self.ctx.request,
                                 log=self.log, ledger=self.exec_groups)}

    async def complete(self, agent_id: str, model: str | None, messages: list[dict[str, Any]], timeout_s: float,
                       on_delta: Any = None, *, max_tokens: int | None = None, temperature: float | None = None,
                       partial_sent: Any = None, fallbacks: tuple[str, ...] = (),
                       tools: list[dict[str, Any]] | None = None) -> tuple[Completion, str]:
        """Call the agent's model (or `model`), falling back to the configured fallbacks while nothing was
        streamed yet and the error is the provider's (not a bad request)."""
        if model:
            refs: tuple[str, ...] = (model, *fallbacks)
            configured = True
        else:
            choice = agent_model(self.agents_cfg, agent_id)
            refs, configured = (choice.primary, *choice.fallbacks), choice.configured
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        for ref in refs:
            try:
                target = resolve(ref, agents=self.agents_cfg, models=self.models_cfg, state_dir=self.root,
                                 agent_id=agent_id, env=os.environ, configured=configured)
                left = timeout_s if ref == refs[0] else max(0.05, deadline - time.monotonic())
                request = ChatRequest(messages, max_tokens, temperature, left, tools)
                return await call(target, request, on_delta), target.ref
            except (ModelConfigError, ProviderError) as exc:
                last = exc
                if exc.code == "INVALID_REQUEST" and ref == refs[0] and len(refs) == 1:
                    raise
                if (partial_sent is not None and partial_sent()) or time.monotonic() >= deadline:
                    raise
                if ref != refs[-1]:
                    self.log.warning("model %s failed (%s); trying the next fallback", ref, exc)
        assert last is not None
        raise last

    # -- events --------------------------------------------------------------------------------------

    @staticmethod
    def _message(text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": now_ms()}

    def _agent_event(self, run: Run, stream: str, data: dict[str, Any]) -> None:
        """An `agent` event, sent only while a client receives events (a client that connects later sees the run's
        events from there on, numbered as if it had seen them all); the supervisor says when none does."""
        run.agent_seq += 1
        if not self.ctx.listened:
            return
        payload: dict[str, Any] = {"runId": run.run_id, "seq": run.agent_seq, "stream": stream, "ts": now_ms(),
                                   "data": data, "sessionKey": run.session_key}
        if run.heartbeat:
            payload["isHeartbeat"] = True
        self.ctx.emit("agent", payload)

    def _chat_event(self, run: Run, state: str, text: str | None = None, **fields: Any) -> None:
        """A `chat` event, numbered and sent as `_agent_event`; `text`, the answer so far, becomes its `message`
        only when it is sent (a streamed answer has one per chunk)."""
        run.chat_seq += 1
        if not self.ctx.listened:
            return
        if text is not None:
            fields["message"] = self._message(text)
        self.ctx.emit("chat", {"runId": run.run_id, "sessionKey": run.session_key, "seq": run.chat_seq,
                               "agentId": run.agent_id, "state": state, **fields})

    def _finish_events(self, run: Run, out: Outcome) -> None:
        ended = out.ended_at
        if out.status == "ok":
            self._agent_event(run, "lifecycle", {"phase": "end", "startedAt": run.started_at, "endedAt": ended})
            self._chat_event(run, "final", out.text, usage=out.usage,
                             stopReason="max_tokens" if out.finish == "length" else "stop")
        elif out.status == "aborted":
            self._agent_event(run, "lifecycle", {"phase": "end", "startedAt": run.started_at, "endedAt": ended,
                                                 "aborted": True})
            self._chat_event(run, "aborted", out.text, stopReason="aborted")
        else:
            self._agent_event(run, "lifecycle", {"phase": "error", "startedAt": run.started_at, "endedAt": ended,
                                                 "error": out.error})
            self._chat_event(run, "error", errorMessage=out.error,
                             errorKind=out.error_kind if out.error_kind in
                             ("refusal", "timeout", "rate_limit", "context_length") else "unknown")

    # -- RPCs ----------------------------------------------------------------------------------------

    async def rpc_agent(self, params: dict[str, Any], partial: Partial) -> dict[str, Any]:
        """Two-stage: a partial `{runId, status: accepted, acceptedAt}`, then the final answer."""
        message = _text(params, "message", "agent")
        key = _text(params, "idempotencyKey", "agent")
        agent_id = agent_of(params.get("sessionKey"), params.get("agentId"))
        session_key = canonical_session(params["sessionKey"], agent_id) if isinstance(
            params.get("sessionKey"), str) and params["sessionKey"] else f"agent:{agent_id}:main"
        model = params.get("model") if isinstance(params.get("model"), str) and params["model"] else None
        if model and isinstance(params.get("provider"), str) and "/" not in model:
            model = f"{params['provider']}/{model}"
        got = self.begin("agent", key=key, run_id=key, agent_id=agent_id, session_key=session_key, message=message,
                         model=model, timeout_s=_timeout(params.get("timeout"), 1.0, self.default_timeout))
        if isinstance(got, dict):
            return got
        if got.recorded is not None:  # accepted once the run's start is on disk
            await asyncio.shield(got.recorded)
        partial({"runId": got.run_id, "status": "accepted", "acceptedAt": got.accepted_at})
        out = await asyncio.shield(got.done)
        return self.answer("agent", got.run_id, out, got.started_at)

    async def rpc_wait(self, params: dict[str, Any]) -> dict[str, Any]:
        run_id = _text(params, "runId", "agent.wait")
        timeout_s = _timeout(params.get("timeoutMs"), 0.001, 30.0)
        run = self.runs.get(run_id)
        if run is None and self._stored(run_id) is None:
            ev = self.waiters.setdefault(run_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), timeout_s)
            if not ev.is_set() and self.waiters.get(run_id) is ev:
                del self.waiters[run_id]
            run = self.runs.get(run_id)
        if run is not None:
            try:
                out = await asyncio.wait_for(asyncio.shield(run.done), timeout_s)
            except TimeoutError:
                return {"runId": run_id, "status": "timeout", "startedAt": run.started_at or run.accepted_at}
            res: dict[str, Any] = {"runId": run_id, "status": "ok" if out.status == "ok" else "error",
                                   "startedAt": run.started_at, "endedAt": out.ended_at}
            if out.status != "ok":
                res["error"] = out.error
            return res
        row = self._stored(run_id)
        if row is None or row["status"] == "running":
            return {"runId": run_id, "status": "timeout"}
        res = {"runId": run_id, "status": row["status"], "startedAt": row["startedAt"], "endedAt": row["endedAt"]}
        if row["status"] != "ok":
            res["error"] = row["error"]
        return res

    def _stored(self, run_id: str) -> dict[str, Any] | None:
        for st in self.stores.values():
            row = st.run_by_id(run_id)
            if row is not None:
                return row
        return None

    async def rpc_chat_send(self, params: dict[str, Any]) -> dict[str, Any]:
        """Start a run and answer at once; its output arrives as `chat` events."""
        session_key = _text(params, "sessionKey", "chat.send")
        message = _text(params, "message", "chat.send")
        key = _text(params, "idempotencyKey", "chat.send")
        agent_id = agent_of(session_key, params.get("agentId"))
        session_key = canonical_session(session_key, agent_id)
        got = self.begin("chat.send", key=key, run_id=key, agent_id=agent_id, session_key=session_key,
                         message=message, model=None,
                         timeout_s=_timeout(params.get("timeoutMs"), 0.001, self.default_timeout))
        if isinstance(got, dict):
            return got
        if got.recorded is not None:
            await asyncio.shield(got.recorded)
        return {"runId": got.run_id, "status": "started"}

    async def rpc_chat_history(self, params: dict[str, Any]) -> dict[str, Any]:
        session_key = _text(params, "sessionKey", "chat.history")
        agent_id = agent_of(session_key, params.get("agentId"))
        session_key = canonical_session(session_key, agent_id)
        limit = params.get("limit", HISTORY_DEFAULT)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= HISTORY_MAX:
            raise RequestError("INVALID_REQUEST", f"invalid chat.history params: limit must be 1-{HISTORY_MAX}")
        offset = params.get("offset", 0)
        offset = offset if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0 else 0
        rows, total = self.store(agent_id).history(session_key, limit, offset)
        budget = HISTORY_MAX_CHARS
        for i in range(len(rows) - 1, -1, -1):
            budget -= len(rows[i]["text"]) + 200
            if budget < 0:
                rows = rows[i + 1:]
                break
        messages = [{"role": r["role"], "content": [{"type": "text", "text": r["text"]}], "timestamp": r["ts"],
                     **({"runId": r["runId"]} if r["runId"] else {})} for r in rows]
        active = [r.run_id for r in self.runs.values() if r.session_key == session_key]
        more = offset + len(rows) < total
        return {"sessionKey": session_key, "sessionId": session_key, "messages": messages,
                "sessionInfo": {"hasActiveRun": bool(active), "activeRunIds": active},
                "hasMore": more, "nextOffset": offset + len(rows) if more else None}

    async def rpc_chat_abort(self, params: dict[str, Any]) -> dict[str, Any]:
        session_key = _text(params, "sessionKey", "chat.abort")
        session_key = canonical_session(session_key, agent_of(session_key, params.get("agentId")))
        run_id = params.get("runId") if isinstance(params.get("runId"), str) else None
        hits = [r for r in self.runs.values()
                if r.session_key == session_key and (run_id is None or r.run_id == run_id)]
        for r in hits:
            if r.task is not None:
                r.task.cancel()
        return {"ok": True, "aborted": bool(hits), "runIds": [r.run_id for r in hits]}

    async def rpc_chat_inject(self, params: dict[str, Any]) -> dict[str, Any]:
        """Append an assistant note to a transcript without a model call (upstream's `chat.inject`)."""
        session_key = _text(params, "sessionKey", "chat.inject")
        message = _text(params, "message", "chat.inject")
        label = params.get("label")
        text = f"[{label}] {message}" if isinstance(label, str) and label else message
        msg_id = self.store(agent_of(session_key, params.get("agentId"))).append(session_key, "assistant", text)
        return {"ok": True, "messageId": str(msg_id)}

    async def rpc_identity(self, params: dict[str, Any]) -> dict[str, Any]:
        agent_id = agent_of(params.get("sessionKey"), params.get("agentId"))
        entry = next((a for a in self.agents_cfg.get("list") or () if isinstance(a, dict) and a.get("id") == agent_id),
                     {})
        identity = entry.get("identity") if isinstance(entry.get("identity"), dict) else {}
        out = {"agentId": agent_id, "name": identity.get("name") or entry.get("name") or agent_id}
        for key in ("emoji", "avatar"):
            if isinstance(identity.get(key), str):
                out[key] = identity[key]
        return out

    async def rpc_turn(self, params: dict[str, Any]) -> dict[str, Any]:
        """`agent.turn` (scheduler, channels): one turn in a session; never raises for a model failure."""
        session_key = _text(params, "sessionKey", "agent.turn")
        message = params.get("message") if isinstance(params.get("message"), str) else ""
        events = [e.get("text") for e in params.get("systemEvents") or () if isinstance(e, dict)
                  and isinstance(e.get("text"), str)]
        if events:
            message = "\n".join(f"System: {t}" for t in events) + ("\n\n" + message if message else "")
        if not message.strip():
            return {"status": "skipped", "reason": "empty-message"}
        agent_id = agent_of(session_key, params.get("agentId"))
        source = params.get("source") if isinstance(params.get("source"), dict) else {}
        route = None
        if source.get("kind") == "channel" and isinstance(source.get("channel"), str):
            peer = session_key.rsplit(":", 1)[-1] if session_key.count(":") >= 4 else source.get("from")
            route = {"channel": source["channel"], "accountId": source.get("accountId"), "to": peer}
        key = params.get("idempotencyKey") if isinstance(params.get("idempotencyKey"), str) else None
        model = params.get("model") if isinstance(params.get("model"), str) and params["model"] else None
        fallbacks = tuple(f for f in params.get("fallbacks") or () if isinstance(f, str) and f) if model else ()
        heartbeat = params.get("kind") == "heartbeat" or source.get("kind") == "heartbeat"
        got = self.begin("agent.turn", key=key or None, run_id=random_uuid(), agent_id=agent_id,
                         session_key=session_key, message=message, model=model,
                         timeout_s=_timeout(params.get("timeoutSeconds"), 1.0, self.default_timeout),
                         heartbeat=heartbeat, route=route, fallbacks=fallbacks,
                         lane=CRON_LANE if heartbeat or source.get("kind") == "cron" else MAIN_LANE)
        if isinstance(got, dict):
            return got
        out = await asyncio.shield(got.done)
        answer = self.answer("agent.turn", got.run_id, out)
        last = self.routes.get(session_key) or self.routes.get(f"{LAST_ROUTE}:{agent_id}")
        if last:
            answer["route"] = last
        return answer

    async def rpc_complete(self, params: dict[str, Any], partial: Partial) -> dict[str, Any]:
        """`agent.complete` (the HTTP API): a stateless completion over the given messages, streamed as partial
        `{delta}` answers when `stream` is true."""
        messages = params.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("INVALID_REQUEST", "invalid agent.complete params: messages must be a non-empty list")
        clean: list[dict[str, str]] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise RequestError("INVALID_REQUEST", f"invalid agent.complete params: messages[{i}] must be "
                                                      "{role: system|user|assistant, content: string}")
            clean.append({"role": m["role"], "content": m["content"]})
        agent_id = params.get("agentId") if isinstance(params.get("agentId"), str) and params["agentId"] else "main"
        model = params.get("model") if isinstance(params.get("model"), str) and params["model"] else None
        if model is not None:
            head, sep, tail = model.partition("/")
            if model in ("openclaw", "openclaw-default"):
                model = None
            elif head == "openclaw" and sep:
                agent_id, model = (agent_id if tail in ("", "default") else tail), None
            elif model.startswith("openclaw:"):
                agent_id, model = model.split(":", 1)[1] or agent_id, None
        max_tokens = params.get("maxTokens") if isinstance(params.get("maxTokens"), int) else None
        temperature = params.get("temperature") if isinstance(params.get("temperature"), (int, float)) else None
        stream = params.get("stream") is True
        sent: list[str] = []

        def on_delta(chunk: str) -> None:
            sent.append(chunk)
            if stream:
                partial({"delta": chunk})

        try:
            async with self.lanes[MAIN_LANE]:  # an agent run of the HTTP API, in the inbound lane as upstream's
                result, ref = await self.complete(agent_id, model, clean, self.default_timeout, on_delta,
                                                  max_tokens=max_tokens, temperature=temperature,
                                                  partial_sent=lambda: bool(sent))
        except (ModelConfigError, ProviderError) as exc:
            raise RequestError(exc.code, str(exc)) from None
        session_key = params.get("sessionKey")
        if isinstance(session_key, str) and session_key:
            store = self.store(agent_of(session_key, agent_id))
            last_user = next((m["content"] for m in reversed(clean) if m["role"] == "user"), None)
            if last_user is not None:
                store.append(session_key, "user", last_user)
            store.append(session_key, "assistant", result.text, model=ref, usage=result.usage())
        return {"text": result.text, "model": ref, "usage": result.usage(), "finishReason": result.finish_reason}

    def release_memory(self) -> None:
        if self.runs:  # a run outlives the request that started it (chat.send answers at once): not idle yet
            return
        for st in self.stores.values():
            st.release_memory()

    async def shutdown(self) -> None:
        """End active runs as errors (stored, so a resent key does not run them again)."""
        self.stopping = True
        tasks = [r.task for r in list(self.runs.values()) if r.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
            for _ in range(3):  # let the requests waiting on these runs send their answers
                await asyncio.sleep(0)
        for group in (*self.grouped.values(), *self.finishing.values()):
            group.drain()
        for st in self.stores.values():
            with contextlib.suppress(Exception):
                st.close()


async def main(ctx: WorkerContext) -> None:
    svc = AgentService(ctx, ctx.state_dir())
    ctx.handle_stream("agent", svc.rpc_agent)
    ctx.handle_stream("agent.complete", svc.rpc_complete)
    ctx.handle("agent.wait", svc.rpc_wait)
    ctx.handle("agent.turn", svc.rpc_turn)
    ctx.handle("chat.send", svc.rpc_chat_send)
    ctx.handle("chat.history", svc.rpc_chat_history)
    ctx.handle("chat.abort", svc.rpc_chat_abort)
    ctx.handle("chat.inject", svc.rpc_chat_inject)
    ctx.handle("agent.identity.get", svc.rpc_identity)
    listing = Listing(svc.root, svc.agents_cfg, svc.models_cfg, svc.store, svc.active_runs)
    ctx.handle("sessions.list", listing.sessions_list)
    ctx.handle("sessions.summary", listing.sessions_summary)
    ctx.handle("usage.cost", listing.usage_cost)
    ctx.when_settled(svc.release_memory)
    ctx.ready()
    svc.store("main")  # opened (created, on a fresh state dir) before this loop serves any request
    svc.announce_interrupted()
    await ctx.stopping.wait()
    await svc.shutdown()
    await close_pool()
