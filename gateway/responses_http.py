"""`POST /v1/responses`: the OpenResponses (OpenAI Responses API) endpoint, as upstream serves it.

Enabled by `gateway.http.endpoints.responses.enabled`. The body is checked like upstream's strict schema
(unknown keys and malformed items are a 400 naming the path); `input` is a string or a list of items
(`message` with roles system/developer/user/assistant, `function_call`, `function_call_output`). Non-stream
answers a `response` object; streaming sends `event: <type>` + `data: <json>` for `response.created`,
`response.in_progress`, `response.output_item.added`, `response.content_part.added`, one
`response.output_text.delta` per agent delta, `response.output_text.done`, `response.content_part.done`,
`response.output_item.done` and `response.completed` (or `response.failed`), then `data: [DONE]`.
`previous_response_id` continues the session of an earlier response by the same caller (30 min, 500 kept).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openclaw_sup.gateway import agent_http as ah
from openclaw_sup.gateway import http_common as hc
from openclaw_sup.gateway.openai_http import responses_enabled
from openclaw_sup.gateway.protocol import MethodError

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

BODY_MAX = 20 * 1024 * 1024
MAX_URL_PARTS = 8
SESSION_TTL_S = 1800.0
SESSION_MAX = 500
KEYS = frozenset({"model", "input", "instructions", "tools", "tool_choice", "text", "stream", "max_output_tokens",
                  "max_tool_calls", "user", "temperature", "top_p", "metadata", "store", "previous_response_id",
                  "reasoning", "truncation"})
ITEM_KEYS = {
    "message": ({"type", "role", "content"}, {"id", "phase", "status"}),
    "function_call": ({"type", "name", "arguments"}, {"id", "call_id", "status"}),
    "function_call_output": ({"type", "call_id", "output"}, set()),
    "reasoning": ({"type"}, {"content", "encrypted_content", "summary"}),
    "item_reference": ({"type", "id"}, set()),
}
ROLES = ("system", "developer", "user", "assistant")
PART_TYPES = ("input_text", "output_text", "input_image", "input_file")

_sessions: collections.OrderedDict[str, tuple[float, str, str]] = collections.OrderedDict()


def remember(response_id: str, scope: str, session: str) -> None:
    now = time.monotonic()
    _sessions[response_id] = (now, scope, session)
    while _sessions and (len(_sessions) > SESSION_MAX or next(iter(_sessions.values()))[0] < now - SESSION_TTL_S):
        _sessions.popitem(last=False)


def recall(response_id: Any, scope: str) -> str | None:
    if not isinstance(response_id, str):
        return None
    entry = _sessions.get(response_id)
    if entry is None or entry[0] < time.monotonic() - SESSION_TTL_S or entry[1] != scope:
        return None
    return entry[2]


class BodyInvalid(ValueError):
    pass


def _check_number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BodyInvalid(f"{key}: Invalid input: expected number")
    if not low <= value <= high:
        raise BodyInvalid(f"{key}: Number must be between {low:g} and {high:g}")


def validate(body: Any) -> dict[str, Any]:
    """Upstream's CreateResponseBody checks, with the path of the first problem in the message."""
    if not isinstance(body, dict):
        raise BodyInvalid(": Invalid input: expected object")
    unknown = sorted(set(body) - KEYS)
    if unknown:
        raise BodyInvalid(f": Unrecognized key(s) in object: {', '.join(repr(k) for k in unknown)}")
    if not isinstance(body.get("model"), str):
        raise BodyInvalid("model: Invalid input: expected string")
    inp = body.get("input")
    if not isinstance(inp, str | list):
        raise BodyInvalid("input: Invalid input: expected string or array of items")
    url_parts = 0
    for i, item in enumerate(inp if isinstance(inp, list) else []):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in ITEM_KEYS:
            raise BodyInvalid(f"input.{i}.type: Invalid discriminator value. Expected "
                              f"{' | '.join(repr(k) for k in ITEM_KEYS)}")
        required, optional = ITEM_KEYS[kind]
        extra = sorted(set(item) - required - optional)
        missing = sorted(required - set(item))
        if extra:
            raise BodyInvalid(f"input.{i}: Unrecognized key(s) in object: {', '.join(repr(k) for k in extra)}")
        if missing:
            raise BodyInvalid(f"input.{i}.{missing[0]}: Required")
        if kind == "message":
            if item["role"] not in ROLES:
                raise BodyInvalid(f"input.{i}.role: Invalid enum value. Expected {' | '.join(ROLES)}")
            content = item["content"]
            if not isinstance(content, str | list):
                raise BodyInvalid(f"input.{i}.content: Invalid input: expected string or array")
            for j, part in enumerate(content if isinstance(content, list) else []):
                if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                    raise BodyInvalid(f"input.{i}.content.{j}.type: Invalid discriminator value. Expected "
                                      f"{' | '.join(repr(t) for t in PART_TYPES)}")
                source = part.get("source")
                if isinstance(source, dict) and source.get("type") == "url":
                    url_parts += 1
        elif kind in ("function_call_output", "function_call"):
            for key in ("output",) if kind == "function_call_output" else ("name", "arguments"):
                if not isinstance(item[key], str):
                    raise BodyInvalid(f"input.{i}.{key}: Invalid input: expected string")
    if url_parts > MAX_URL_PARTS:
        raise BodyInvalid(f"Too many URL-based input sources: {url_parts} (limit: {MAX_URL_PARTS})")
    for key in ("instructions", "user", "previous_response_id"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BodyInvalid(f"{key}: Invalid input: expected string")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise BodyInvalid("stream: Invalid input: expected boolean")
    cap = body.get("max_output_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
        raise BodyInvalid("max_output_tokens: Number must be a positive integer")
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BodyInvalid("tools: Invalid input: expected array")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise BodyInvalid(f"tools.{i}.type: Invalid literal value, expected \"function\"")
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise BodyInvalid(f"tools.{i}.name: Tool name cannot be empty")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required") and not (
            isinstance(choice, dict) and choice.get("type") == "function"
            and ((isinstance(choice.get("name"), str) and choice["name"])
                 or (isinstance(choice.get("function"), dict) and isinstance(choice["function"].get("name"), str)))):
        raise BodyInvalid("tool_choice: Invalid input")
    return body


def _text(content: Any) -> tuple[str, bool]:
    """(text, has media) of a message item's content."""
    if isinstance(content, str):
        return content, False
    texts = [p["text"] for p in content if p.get("type") in ("input_text", "output_text")
             and isinstance(p.get("text"), str)]
    media = any(p.get("type") in ("input_image", "input_file") for p in content)
    return "\n".join(texts), media


def messages_of(body: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"].strip():
        out.append({"role": "system", "content": body["instructions"]})
    inp = body["input"]
    if isinstance(inp, str):
        if inp.strip():
            out.append({"role": "user", "content": inp})
        return out
    for item in inp:
        if item["type"] == "message":
            text, media = _text(item["content"])
            if media:
                raise BodyInvalid("Image and file inputs are not supported by this gateway yet; send text only.")
            if text.strip():
                role = "system" if item["role"] in ("system", "developer") else item["role"]
                out.append({"role": role, "content": text.strip()})
        elif item["type"] == "function_call":
            out.append({"role": "assistant", "content": f"[tool call {item['name']}({item['arguments']})]"})
        elif item["type"] == "function_call_output":
            out.append({"role": "user", "content": f"[tool result {item['call_id']}]\n{item['output']}"})
    return out


def usage_of(answer: dict[str, Any] | None) -> dict[str, Any]:
    inp, out = ah.usage_counts(answer or {})
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + out}


def resource(ident: dict[str, Any], status: str, output: list[dict[str, Any]], usage: dict[str, Any],
             error: dict[str, Any] | None = None) -> dict[str, Any]:
    res = {"id": ident["id"], "object": "response", "created_at": ident["created"], "status": status,
           "model": ident["model"], "output": output, "usage": usage, "error": error}
    if status == "incomplete":
        res["incomplete_details"] = {"reason": "max_output_tokens"}
    return res


def message_item(item_id: str, text: str, status: str, phase: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "id": item_id, "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    if phase:
        item["phase"] = phase
    item["status"] = status
    return item


def caller_scope(request: web.Request, core: GatewayCore, agent: str) -> str:
    """Who may continue a response: the same bearer secret, agent and session-key header."""
    token = hc.bearer_token(request)
    subject = f"bearer:{hashlib.sha256(token.encode()).hexdigest()}" if token else f"gateway-auth:{core.auth.mode}"
    return f"{subject}|{agent}|{(request.headers.get('x-openclaw-session-key') or '').strip()}"


async def handle_responses(request: web.Request, core: GatewayCore) -> web.StreamResponse:
    cfg = core.host.gateway_config()
    if not responses_enabled(cfg):
        return hc.not_found()
    raw = await hc.post_json(request, core, BODY_MAX)
    if isinstance(raw, web.StreamResponse):
        return raw
    try:
        body = validate(raw)
        agent = ah.resolve_agent(request, cfg, body["model"])
        scope = caller_scope(request, core, agent)
        session = recall(body.get("previous_response_id"), scope) or ah.resolve_session(
            request, agent, body.get("user"), "openresponses")
        messages = messages_of(body)
    except hc.BodyError as exc:
        return hc.body_error(exc)
    except ValueError as exc:  # BodyInvalid, TargetError
        return hc.invalid_request(str(exc))
    if not any(m["role"] == "user" for m in messages):
        return hc.invalid_request("Missing user message in `input`.")
    stream = body.get("stream") is True
    params: dict[str, Any] = {"model": ah.model_override(request), "agentId": agent, "sessionKey": session,
                              "messages": messages, "stream": stream}
    if body.get("max_output_tokens") is not None:
        params["maxTokens"] = body["max_output_tokens"]
    if body.get("temperature") is not None:
        params["temperature"] = body["temperature"]
    if body.get("user"):
        params["user"] = body["user"]
    ident = {"id": f"resp_{uuid.uuid4()}", "created": int(time.time()), "model": body["model"],
             "item": f"msg_{uuid.uuid4()}"}
    run = ah.AgentRun(core, params).start()
    try:
        if stream:
            return await _stream(request, core, run, ident, scope, session)
        return await _complete(request, core, run, ident, scope, session)
    finally:
        run.cancel()


async def _complete(request: web.Request, core: GatewayCore, run: ah.AgentRun, ident: dict[str, Any], scope: str,
                    session: str) -> web.StreamResponse:
    try:
        answer = await run.result(request)
    except ah.ClientGone:
        await ah.abandon(core, run, "openresponses request")
        return web.Response(status=499)
    except MethodError as exc:
        status, message, type_ = ah.worker_error(exc)
        core.log("warning", f"openresponses: non-stream response failed: {message}")
        remember(ident["id"], scope, session)
        return hc.json_response(status, resource(ident, "failed", [], usage_of(None),
                                                 {"code": type_, "message": message}))
    status = "incomplete" if answer.get("finishReason") == "length" else "completed"
    remember(ident["id"], scope, session)
    return hc.json_response(200, resource(ident, status, [message_item(ident["item"], ah.answer_text(answer), status,
                                                                       "final_answer")], usage_of(answer)))


async def _stream(request: web.Request, core: GatewayCore, run: ah.AgentRun, ident: dict[str, Any], scope: str,
                  session: str) -> web.StreamResponse:
    sse = hc.SseStream(request)
    await sse.start()
    item_id = ident["item"]
    initial = resource(ident, "in_progress", [], usage_of(None))
    seq = itertools.count()

    def ev(type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "sequence_number": next(seq), **fields}

    await sse.event(ev("response.created", response=initial), ev("response.in_progress", response=initial),
                    ev("response.output_item.added", output_index=0,
                       item={**message_item(item_id, "", "in_progress"), "content": []}),
                    ev("response.content_part.added", item_id=item_id, output_index=0, content_index=0,
                       part={"type": "output_text", "text": "", "annotations": []}))
    async def send(batch: list[str]) -> bool:
        return await sse.event(*(ev("response.output_text.delta", item_id=item_id, output_index=0,
                                    content_index=0, delta=d, logprobs=[]) for d in batch))

    try:
        answer, streamed = await run.relay(request, send)
    except ah.ClientGone:
        await ah.abandon(core, run, "openresponses stream")
        return sse.response
    except MethodError as exc:
        _status, message, type_ = ah.worker_error(exc)
        core.log("warning", f"openresponses: streaming response failed: {message}")
        remember(ident["id"], scope, session)
        return await sse.done(sse.event_lines(ev("response.failed", response=resource(
            ident, "failed", [], usage_of(None), {"code": type_, "message": message}))))
    usage = usage_of(answer)
    remember(ident["id"], scope, session)
    final = ah.stream_tail(answer, streamed)
    if final is None:
        return await sse.done(sse.event_lines(ev("response.failed", response=resource(ident, "failed", [], usage, {
            "code": "server_error", "message": ah.NOT_APPEND_ONLY}))))
    text, rest = final
    tail = []
    if rest:
        tail.append(ev("response.output_text.delta", item_id=item_id, output_index=0, content_index=0,
                       delta=rest, logprobs=[]))
    status = "incomplete" if answer.get("finishReason") == "length" else "completed"
    item = message_item(item_id, text, status, "final_answer")
    tail += [ev("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text,
                logprobs=[]),
             ev("response.content_part.done", item_id=item_id, output_index=0, content_index=0,
                part={"type": "output_text", "text": text, "annotations": []}),
             ev("response.output_item.done", output_index=0, item=item),
             ev(f"response.{status}", response=resource(ident, status, [item], usage))]
    return await sse.done(sse.event_lines(*tail))
