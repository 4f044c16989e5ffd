"""The tool loop's rules, with a scripted model callable: results fed back, the transcript records in upstream's
shape, the events, an unknown tool, and the bounds on rounds and on time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from openclaw_sup.workers.agent.exec_tool import ToolResult
from openclaw_sup.workers.agent.providers import Completion, ToolCall
from openclaw_sup.workers.agent.toolloop import ToolLoopBound, run_loop


class Echo:
    spec = {"name": "echo", "description": "repeat", "parameters": {"type": "object"}}

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[ToolCall] = []

    async def run(self, call: ToolCall, deadline: float, update: Callable[[dict[str, Any]], None]) -> ToolResult:
        self.calls.append(call)
        update({"status": "working"})
        await asyncio.sleep(self.delay)
        return ToolResult(f"echo:{call.arguments.get('text')}", False, {"status": "completed"})


def scripted(rounds: list[list[ToolCall]], final: str = "done") -> tuple[Any, list[list[dict[str, Any]]]]:
    seen: list[list[dict[str, Any]]] = []

    async def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> tuple[Completion, str]:
        seen.append([dict(m) for m in messages])
        step = len(seen) - 1
        if step < len(rounds):
            return Completion("", 2, 1, "tool_calls", rounds[step]), "scripted/m1"
        return Completion(final, 2, 1), "scripted/m1"

    return model, seen


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_results_are_fed_back_and_recorded() -> None:
    model, seen = scripted([[ToolCall("c1", "echo", {"text": "a"}), ToolCall("c2", "nope", {})]])
    records: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    tool = Echo()
    res = run(run_loop(model=model, messages=[{"role": "user", "content": "go"}], tools={"echo": tool},
                       emit=lambda s, d: events.append((s, d)), record=records.append,
                       deadline=time.monotonic() + 10))
    assert (res.completion.text, res.rounds, res.usage) == ("done", 1, {"inputTokens": 4, "outputTokens": 2})
    fed = seen[1]
    assert fed[1] == {"role": "assistant", "content": "", "toolCalls": [
        {"id": "c1", "name": "echo", "arguments": {"text": "a"}}, {"id": "c2", "name": "nope", "arguments": {}}]}
    assert fed[2] == {"role": "tool", "toolCallId": "c1", "name": "echo", "content": "echo:a", "isError": False}
    assert fed[3]["toolCallId"] == "c2" and fed[3]["isError"] and "Tool nope not found" in fed[3]["content"]
    assert records[0]["role"] == "assistant" and records[0]["stopReason"] == "toolUse"
    assert records[0]["content"] == [{"type": "toolCall", "id": "c1", "name": "echo", "arguments": {"text": "a"}},
                                     {"type": "toolCall", "id": "c2", "name": "nope", "arguments": {}}]
    assert records[1] == {"role": "toolResult", "toolCallId": "c1", "toolName": "echo",
                          "content": [{"type": "text", "text": "echo:a"}], "details": {"status": "completed"},
                          "isError": False, "timestamp": records[1]["timestamp"]}
    phases = [(d["toolCallId"], d["phase"]) for s, d in events if s == "item"]
    assert phases == [("c1", "start"), ("c1", "update"), ("c1", "end"), ("c2", "start"), ("c2", "end")]
    outputs = [d for s, d in events if s == "command_output"]
    assert [o["status"] for o in outputs] == ["completed", "failed"]


def test_rounds_are_bounded() -> None:
    model, seen = scripted([[ToolCall(f"c{i}", "echo", {"text": str(i)})] for i in range(50)])
    with pytest.raises(ToolLoopBound, match="3 rounds in a row"):
        run(run_loop(model=model, messages=[], tools={"echo": Echo()}, emit=lambda s, d: None,
                     record=lambda m: None, deadline=time.monotonic() + 10, max_rounds=3))
    assert len(seen) == 4


def test_a_tool_cannot_outlive_the_run() -> None:
    model, seen = scripted([[ToolCall("c1", "echo", {"text": "slow"})]])
    t0 = time.monotonic()
    res = run(run_loop(model=model, messages=[], tools={"echo": Echo(delay=30)}, emit=lambda s, d: None,
                       record=lambda m: None, deadline=time.monotonic() + 0.5))
    assert time.monotonic() - t0 < 5
    assert res.completion.text == "done"
    result = seen[1][-1]
    assert result["isError"] and "time limit was reached" in result["content"]


def test_replay_pairs_calls_with_results() -> None:
    from openclaw_sup.workers.agent.toolloop import INTERRUPTED_RESULT, replay

    transcript = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "toolCall", "id": "a", "name": "exec",
                                           "arguments": {"command": "id"}}]},
        {"role": "toolResult", "toolCallId": "a", "toolName": "exec", "content": [{"type": "text", "text": "uid=0"}],
         "isError": False},
        {"role": "toolResult", "toolCallId": "zzz", "toolName": "exec", "content": [{"type": "text", "text": "x"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "root"}]},
        {"role": "assistant", "content": [{"type": "toolCall", "id": "b", "name": "exec", "arguments": {}}]},
        {"role": "user", "content": "again"},
    ]
    assert replay(transcript) == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "",
         "toolCalls": [{"id": "a", "name": "exec", "arguments": {"command": "id"}}]},
        {"role": "tool", "toolCallId": "a", "name": "exec", "content": "uid=0", "isError": False},
        {"role": "assistant", "content": "root"},
        {"role": "assistant", "content": "", "toolCalls": [{"id": "b", "name": "exec", "arguments": {}}]},
        {"role": "tool", "toolCallId": "b", "name": "exec", "content": INTERRUPTED_RESULT, "isError": True},
        {"role": "user", "content": "again"},
    ]
