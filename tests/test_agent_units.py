"""The worker side of partial answers (workers/runtime.py `handle_stream`) and `agent.complete` streaming with the
echo provider, in process: the bus link is replaced by a recorder, everything else is the real code."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from agent_servers import run_in_worker_loop

from openclaw_sup.workers.agent.service import AgentService
from openclaw_sup.workers.runtime import WorkerContext


class RecordingLink:
    """Stands in for the DealerLink: keeps what the worker would send to the supervisor."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> bool:
        self.sent.append(msg)
        return True


def make_ctx(tmp_path: Path) -> tuple[WorkerContext, RecordingLink]:
    link = RecordingLink()
    options = {"stateDir": str(tmp_path), "agents": {"defaults": {"model": "echo/echo"}}, "models": {}}
    return WorkerContext("agent", "agent", options, "default", link), link  # type: ignore[arg-type]


def test_agent_complete_streams_partial_deltas_then_the_final_answer(tmp_path: Path) -> None:
    ctx, link = make_ctx(tmp_path)

    async def go() -> None:
        svc = AgentService(ctx, tmp_path)
        ctx.handle_stream("agent.complete", svc.rpc_complete)
        await ctx._serve({"kind": "req", "id": "gw:7", "from": "http", "method": "agent.complete", "params": {
            "model": "openclaw/main", "agentId": "main", "sessionKey": "agent:main:openai-user:bob", "stream": True,
            "messages": [{"role": "user", "content": "one two three"}]}})
        await ctx._serve({"kind": "req", "id": "gw:8", "method": "agent.complete", "params": {
            "model": "echo/echo", "stream": False, "messages": [{"role": "user", "content": "quiet please"}]}})
        await ctx._serve({"kind": "req", "id": "gw:9", "method": "agent.complete", "params": {
            "model": None, "stream": False, "messages": [{"role": "robot", "content": "x"}]}})
        hist = await svc.rpc_chat_history({"sessionKey": "agent:main:openai-user:bob"})
        assert [(m["role"], m["content"][0]["text"]) for m in hist["messages"]] == [
            ("user", "one two three"), ("assistant", "one two three")]
        await svc.shutdown()

    run_in_worker_loop(go())
    first = [m for m in link.sent if m["id"] == "gw:7"]
    assert [m.get("partial", False) for m in first] == [True, True, True, False]
    assert [m["payload"] for m in first[:3]] == [{"delta": "one "}, {"delta": "two "}, {"delta": "three"}]
    assert all(m["to"] == "http" and m["ok"] is True for m in first)
    assert first[3]["payload"] == {"text": "one two three", "model": "echo/echo",
                                   "usage": {"inputTokens": 3, "outputTokens": 3}, "finishReason": "stop"}
    quiet = [m for m in link.sent if m["id"] == "gw:8"]
    assert len(quiet) == 1 and quiet[0]["payload"]["text"] == "quiet please"
    bad = next(m for m in link.sent if m["id"] == "gw:9")
    assert bad["ok"] is False and bad["error"]["code"] == "INVALID_REQUEST"
    assert "messages[0]" in bad["error"]["message"]


def test_a_worker_request_ignores_partial_answers(tmp_path: Path) -> None:
    ctx, link = make_ctx(tmp_path)

    async def go() -> Any:
        task = asyncio.create_task(ctx.request("agent.complete", {}, to="agent", timeout=5))
        await asyncio.sleep(0)
        rid = link.sent[-1]["id"]
        ctx._on_bus(orjson.dumps({"kind": "res", "id": rid, "partial": True, "ok": True, "payload": {"delta": "a"}}))
        await asyncio.sleep(0)
        assert not task.done()
        ctx._on_bus(orjson.dumps({"kind": "res", "id": rid, "ok": True, "payload": {"text": "a"}}))
        return await task

    assert run_in_worker_loop(go()) == {"text": "a"}


def test_a_resent_key_returns_the_stored_answer_after_a_crash(tmp_path: Path) -> None:
    """A run found `running` when the store opens was cut short: closed as an error, never run again."""
    from openclaw_sup.workers.agent.store import AgentStore, db_path

    st = AgentStore(db_path(tmp_path, "main"))
    assert st.start_run("agent:k1", "k1", "agent", "agent:main:main", 1)
    st.close()
    ctx, link = make_ctx(tmp_path)

    async def go() -> dict[str, Any]:
        svc = AgentService(ctx, tmp_path)
        out = await svc.rpc_agent({"message": "hi", "idempotencyKey": "k1"}, lambda _p: True)
        await svc.shutdown()
        return out

    out = run_in_worker_loop(go())
    assert out["runId"] == "k1" and out["status"] == "error" and out["summary"].startswith("interrupted")
    assert not [m for m in link.sent if m["kind"] == "event"]  # nothing ran


def test_fallbacks_are_tried_when_the_primary_is_unavailable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ctx, _link = make_ctx(tmp_path)
    ctx.options["agents"] = {"defaults": {"model": {"primary": "openai/gpt-4o", "fallbacks": ["echo/echo"]}}}

    async def go() -> tuple[Any, str, dict[str, Any]]:
        svc = AgentService(ctx, tmp_path)
        result, ref = await svc.complete("main", None, [{"role": "user", "content": "fall back"}], 5)
        turn = await svc.rpc_turn({"sessionKey": "cron:job1", "message": "x y", "timeoutSeconds": 5,
                                   "source": {"kind": "cron"}, "model": "nope/m", "fallbacks": ["echo/echo"]})
        await svc.shutdown()
        return result, ref, turn

    result, ref, turn = run_in_worker_loop(go())
    assert (result.text, ref) == ("fall back", "echo/echo")
    assert turn["status"] == "ok" and turn["model"] == "echo/echo" and turn["summary"] == "x y"


def test_chat_inject_and_identity(tmp_path: Path) -> None:
    ctx, _link = make_ctx(tmp_path)
    ctx.options["agents"] = {"list": [{"id": "ops", "identity": {"name": "Opsy", "emoji": "🦞"}}]}

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        svc = AgentService(ctx, tmp_path)
        injected = await svc.rpc_chat_inject({"sessionKey": "agent:ops:main", "message": "note", "label": "sys"})
        hist = await svc.rpc_chat_history({"sessionKey": "agent:ops:main"})
        ident = await svc.rpc_identity({"agentId": "ops"})
        await svc.shutdown()
        return injected, hist, ident

    injected, hist, ident = run_in_worker_loop(go())
    assert injected["ok"] is True
    assert [m["content"][0]["text"] for m in hist["messages"]] == ["[sys] note"]
    assert (tmp_path / "agents" / "ops" / "agent" / "openclaw-agent.sqlite").exists()
    assert ident == {"agentId": "ops", "name": "Opsy", "emoji": "🦞"}


def test_a_key_resent_while_its_run_ends_gets_its_answer_and_runs_once(tmp_path: Path) -> None:
    """Channel turns end in groups (their transcript and their stored answers each committed together): a key
    resent at any moment, up to and after its answer, gets that answer and never a second run."""
    from openclaw_sup.workers.agent.store import message_text

    ctx, _link = make_ctx(tmp_path)

    def params(n: int) -> dict[str, Any]:
        return {"sessionKey": f"agent:main:telegram:direct:{n}", "message": f"m{n}", "idempotencyKey": f"k{n}"}

    async def go() -> tuple[list[Any], list[Any], list[Any]]:
        svc = AgentService(ctx, tmp_path)
        first = [asyncio.create_task(svc.rpc_turn(params(n))) for n in range(10)]
        resent: list[asyncio.Task[Any]] = []
        for _pass in range(50):  # a resend of every key on every loop pass while the runs end, and after
            resent += [asyncio.create_task(svc.rpc_turn(params(n))) for n in range(10)]
            await asyncio.sleep(0)
        answers = await asyncio.gather(*first)
        again = await asyncio.gather(*resent)
        store = svc.store("main")
        contexts = [[message_text(m) for m in store.context(params(n)["sessionKey"], 39)] for n in range(10)]
        await svc.shutdown()
        return answers, again, contexts

    answers, again, contexts = run_in_worker_loop(go())
    assert [(a["status"], a["summary"]) for a in answers] == [("ok", f"m{n}") for n in range(10)]
    assert all((a["status"], a["summary"]) == ("ok", f"m{i % 10}") for i, a in enumerate(again)), again
    assert contexts == [[f"m{n}", f"m{n}"] for n in range(10)]
