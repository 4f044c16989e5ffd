"""The agent's tool loop: ask the model, run the tools it calls, feed the results back, until it answers.

Each round is one model call; when the completion asks for tools, each call runs (a tool's failure is its
result, never the run's), the assistant's calls and every result are recorded in the transcript in upstream's
shape (an assistant message with `toolCall` parts, then `toolResult` messages), and tool events stream on the
`agent` stream (`item` start / update / end, `command_output`). The loop is bounded: at most `max_rounds` rounds,
and the run's deadline, which tools also honour (a command's timeout never outlives the run).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from openclaw_sup.config.record import record
from openclaw_sup.workers.agent.exec_tool import ToolResult, error_result
from openclaw_sup.workers.agent.providers import Completion, ToolCall
from openclaw_sup.workers.runtime import RequestError

MAX_ROUNDS = 16
ModelCall = Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], Awaitable[tuple[Completion, str]]]
Emit = Callable[[str, dict[str, Any]], None]
Record = Callable[[dict[str, Any]], None]


class Tool(Protocol):
    spec: dict[str, Any]

    async def run(self, call: ToolCall, deadline: float, update: Callable[[dict[str, Any]], None]) -> ToolResult:
        ...


class ToolLoopBound(Exception):
    """The model kept calling tools past the bound; the run ends with this error."""


@record
class LoopResult:
    completion: Completion
    ref: str
    rounds: int
    usage: dict[str, int]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _title(call: ToolCall) -> str:
    command = call.arguments.get("command")
    return f"Exec {command}"[:200] if call.name == "exec" and isinstance(command, str) else call.name


async def run_loop(*, model: ModelCall, messages: list[dict[str, Any]], tools: dict[str, Tool], emit: Emit,
                   record: Record, deadline: float, max_rounds: int = MAX_ROUNDS) -> LoopResult:
    specs = [t.spec for t in tools.values()] or None
    usage = {"inputTokens": 0, "outputTokens": 0}
    rounds = 0
    while True:
        completion, ref = await model(messages, specs)
        usage["inputTokens"] += completion.input_tokens
        usage["outputTokens"] += completion.output_tokens
        if not completion.tool_calls:
            return LoopResult(completion, ref, rounds, usage)
        rounds += 1
        if rounds > max_rounds:
            raise ToolLoopBound(f"the model asked for tools {max_rounds} rounds in a row; the run stopped at the bound "
                                "of tool rounds per run")
        provider, _, model_name = ref.partition("/")
        calls = [{"type": "toolCall", "id": c.id, "name": c.name, "arguments": c.arguments}
                 for c in completion.tool_calls]
        record({"role": "assistant", "content": [
            *([{"type": "text", "text": completion.text}] if completion.text else []), *calls],
            "api": "openclaw-sup", "provider": provider, "model": model_name,
            "usage": {"input": completion.input_tokens, "output": completion.output_tokens,
                      "totalTokens": completion.input_tokens + completion.output_tokens},
            "stopReason": "toolUse", "timestamp": _now_ms()})
        messages.append({"role": "assistant", "content": completion.text, "toolCalls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls]})
        for call in completion.tool_calls:
            result = await run_one(call, tools, emit, deadline)
            record({"role": "toolResult", "toolCallId": call.id, "toolName": call.name,
                    "content": [{"type": "text", "text": result.text}], "details": result.details,
                    "isError": result.is_error, "timestamp": _now_ms()})
            messages.append({"role": "tool", "toolCallId": call.id, "name": call.name, "content": result.text,
                             "isError": result.is_error})


async def run_one(call: ToolCall, tools: dict[str, Tool], emit: Emit, deadline: float) -> ToolResult:
    """One tool call with its events; whatever goes wrong becomes the call's error result."""
    item = {"itemId": f"tool:{call.id}", "toolCallId": call.id, "name": call.name, "kind": "tool",
            "title": _title(call), "commandBearing": call.name == "exec"}
    started = _now_ms()
    emit("item", {**item, "phase": "start", "status": "running", "startedAt": started})

    def update(data: dict[str, Any]) -> None:
        emit("item", {**item, "phase": "update", **data})

    tool = tools.get(call.name)
    if tool is None:
        result = error_result(f"Tool {call.name} not found (available: {', '.join(sorted(tools)) or 'none'})")
    else:
        try:
            result = await asyncio.wait_for(tool.run(call, deadline, update), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            result = error_result("the run's time limit was reached while this tool was running; it was stopped")
        except RequestError as exc:
            text = str(exc)
            result = error_result(text if re.match(r"[A-Z_]+: ", text) else f"{exc.code}: {text}")
    status = "failed" if result.is_error else "completed"
    end = {**item, "phase": "end", "status": status, "startedAt": started, "endedAt": _now_ms()}
    if result.is_error:
        end["error"] = result.details.get("error") or result.text[:500]
    emit("item", end)
    emit("command_output", {"itemId": f"command:{call.id}", "phase": "end", "title": f"command {item['title']}",
                            "toolCallId": call.id, "name": call.name, "output": result.text[:4000],
                            "status": status})
    return result


INTERRUPTED_RESULT = "the tool run was interrupted (the agent stopped before it finished); its outcome is unknown"


def replay(transcript: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transcript messages (upstream's shape) as the model context: text turns, tool calls and their results.

    A call whose result never got recorded (a crash mid-tool) gets an error result saying so, and a result
    without its call is dropped: providers refuse a conversation where the two do not pair up.
    """
    out: list[dict[str, Any]] = []
    waiting: dict[str, str] = {}  # call id -> tool name, still without a result

    def close_waiting() -> None:
        for call_id, name in waiting.items():
            out.append({"role": "tool", "toolCallId": call_id, "name": name, "content": INTERRUPTED_RESULT,
                        "isError": True})
        waiting.clear()

    for m in transcript:
        role = m.get("role")
        content = m.get("content")
        if not waiting:  # most of a context: a plain question, a plain answer
            if role == "user" and isinstance(content, str):
                out.append({"role": "user", "content": content})
                continue
            if role == "assistant" and isinstance(content, list) and len(content) == 1:
                part = content[0]
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    out.append({"role": "assistant", "content": part["text"]})
                    continue
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}] \
            if isinstance(content, str) else []
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")
        if role == "toolResult":
            call_id = m.get("toolCallId")
            if call_id in waiting:
                out.append({"role": "tool", "toolCallId": call_id, "name": waiting.pop(call_id), "content": text,
                            "isError": bool(m.get("isError"))})
            continue
        close_waiting()
        if role == "user":
            out.append({"role": "user", "content": text})
        elif role == "assistant":
            calls = [{"id": p["id"], "name": p.get("name", ""), "arguments": p.get("arguments") or {}}
                     for p in parts if isinstance(p, dict) and p.get("type") == "toolCall" and p.get("id")]
            out.append({"role": "assistant", "content": text, **({"toolCalls": calls} if calls else {})})
            waiting.update({c["id"]: c["name"] for c in calls})
    close_waiting()
    return out
