"""`GET /v1/models[/{id}]` and `POST /v1/chat/completions`, OpenAI-compatible, as upstream serves them.

Off by default: `gateway.http.endpoints.chatCompletions.enabled` (or `.responses.enabled`, which enables the
model list too) turns them on; while off the paths answer 404 like any unclaimed path. The config is read per
request, so a reload applies without re-binding. The body limit is 20 MB; parameters out of range are a 400
`invalid_request_error` with upstream's text. Streaming is SSE: a role chunk, one content chunk per delta the
agent worker sends, the finish chunk, an optional usage chunk, then `data: [DONE]`; a failure after the
headers went out is a `data: {"error": ...}` event before `[DONE]`.
"""

from __future__ import annotations

import math
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openclaw_sup.gateway import agent_http as ah
from openclaw_sup.gateway import http_common as hc
from openclaw_sup.gateway.protocol import MethodError

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

CHAT_BODY_MAX = 20 * 1024 * 1024
MAX_IMAGE_PARTS = 8
TOOL_CHOICES = ("auto", "none", "required")


def endpoints(cfg: dict[str, Any]) -> dict[str, Any]:
    return (((cfg.get("gateway") or {}).get("http") or {}).get("endpoints")) or {}


def chat_enabled(cfg: dict[str, Any]) -> bool:
    return (endpoints(cfg).get("chatCompletions") or {}).get("enabled") is True


def responses_enabled(cfg: dict[str, Any]) -> bool:
    return (endpoints(cfg).get("responses") or {}).get("enabled") is True


def _model(id_: str) -> dict[str, Any]:
    return {"id": id_, "object": "model", "created": 0, "owned_by": "openclaw", "permission": []}


async def handle_models(request: web.Request, core: GatewayCore) -> web.StreamResponse:
    cfg = core.host.gateway_config()
    if not (chat_enabled(cfg) or responses_enabled(cfg)):
        return hc.not_found()
    if request.method not in ("GET", "HEAD"):
        return hc.method_not_allowed("GET")
    denied = hc.authorize(request, core)
    if denied is not None:
        return denied
    ids = ah.model_ids(cfg)
    path = request.raw_path.split("?", 1)[0]
    if path.rstrip("/") == "/v1/models":
        return hc.json_response(200, {"object": "list", "data": [_model(i) for i in ids]})
    encoded = path[len("/v1/models/"):]
    try:
        wanted = urllib.parse.unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return hc.invalid_request("Invalid model id encoding.")
    if not ah.is_agent_model(wanted):
        return hc.invalid_request("Invalid model id.")
    if wanted not in ids:
        return hc.openai_error(404, f"Model '{wanted}' not found.", "invalid_request_error")
    return hc.json_response(200, _model(wanted))


# ------------------------------------------------------------------------------------------------- validation

def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"`{key}` must be a finite number.")
    return value


def sampling_error(body: dict[str, Any]) -> str | None:
    """Upstream's range checks for temperature, top_p, the penalties and seed (None when all are fine)."""
    try:
        for key, low, high, shown in (("temperature", 0, 2, "0 and 2"), ("top_p", 0, 1, "0 and 1"),
                                      ("frequency_penalty", -2, 2, "-2.0 and 2.0"),
                                      ("presence_penalty", -2, 2, "-2.0 and 2.0")):
            value = _number(body, key)
            if value is not None and not low <= value <= high:
                return f"`{key}` must be between {shown}."
        seed = _number(body, "seed")
        if seed is not None and seed != int(seed):
            return "`seed` must be an integer."
    except ValueError as exc:
        return str(exc)
    return None


def token_cap(body: dict[str, Any]) -> int | None:
    cap = None
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive safe integer")
        cap = value if key == "max_completion_tokens" or cap is None else cap
    return cap


def check_stop(value: Any) -> None:
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("Invalid stop: stop must be a string or array of strings")
    if len(items) > 4:
        raise ValueError("Invalid stop: stop supports at most 4 sequences")
    if any(not isinstance(s, str) or not s for s in items):
        raise ValueError("Invalid stop: stop entries must be non-empty strings")


def check_tools(tools: Any, choice: Any) -> None:
    """Function tools are validated as upstream; the agent here never calls client tools (see README)."""
    if tools is not None:
        if not isinstance(tools, list):
            raise ValueError("Invalid tools/tool_choice: tools must be an array")
        for tool in tools:
            if not isinstance(tool, dict):
                raise ValueError("Invalid tools/tool_choice: each tool must be an object")
            if tool.get("type") != "function":
                raise ValueError("Invalid tools/tool_choice: only function tools are supported")
            fn = tool.get("function")
            if not isinstance(fn, dict):
                raise ValueError("Invalid tools/tool_choice: tool.function is required")
            if not isinstance(fn.get("name"), str) or not fn["name"].strip():
                raise ValueError("Invalid tools/tool_choice: tool.function.name is required")
    if choice is None or choice in TOOL_CHOICES:
        return
    if (isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str) and choice["function"]["name"].strip()):
        return
    raise ValueError("Invalid tools/tool_choice: tool_choice must be auto, none, required or "
                     "{type: \"function\", function: {name}}")


def text_of(content: Any) -> tuple[str, int]:
    """(text, number of image parts) of a chat message's `content` (a string or a list of parts)."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts, images = [], 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") in ("image_url", "input_image"):
            images += 1
    return "\n".join(texts), images


def chat_messages(raw: Any) -> list[dict[str, str]]:
    """The request's messages in the contract's shape; `developer` counts as system, a tool result as user."""
    out: list[dict[str, str]] = []
    images = 0
    for msg in raw if isinstance(raw, list) else []:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        text, n = text_of(msg.get("content"))
        images += n
        if role in ("system", "developer"):
            role = "system"
        elif role == "tool":
            role, text = "user", f"[tool result {msg.get('tool_call_id') or ''}]\n{text}".strip()
        elif role not in ("user", "assistant"):
            continue
        if text.strip():
            out.append({"role": role, "content": text})
    if images > MAX_IMAGE_PARTS:
        raise ValueError(f"Too many image_url parts in `messages` ({images}; limit {MAX_IMAGE_PARTS}).")
    if images:
        raise ValueError("Image inputs are not supported by this gateway yet; send text content only.")
    return out


def chat_usage(answer: dict[str, Any]) -> dict[str, int]:
    prompt, completion = ah.usage_counts(answer)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ------------------------------------------------------------------------------------------------ the handler

async def handle_chat(request: web.Request, core: GatewayCore) -> web.StreamResponse:
    cfg = core.host.gateway_config()
    if not chat_enabled(cfg):
        return hc.not_found()
    body = await hc.post_json(request, core, CHAT_BODY_MAX)
    if isinstance(body, web.StreamResponse):
        return body
    if not isinstance(body, dict):
        return hc.invalid_request("request body must be a JSON object")
    model = body.get("model") if isinstance(body.get("model"), str) else "openclaw"
    user = body.get("user") if isinstance(body.get("user"), str) else None
    try:
        if body.get("messages") is not None and not isinstance(body["messages"], list):
            raise ValueError("messages: expected an array")
        max_tokens = token_cap(body)
        if body.get("response_format") is not None and (
                not isinstance(body["response_format"], dict)
                or body["response_format"].get("type") not in ("text", "json_object", "json_schema")):
            raise ValueError("Invalid response_format: response_format.type must be text, json_object, or "
                             "json_schema")
        check_stop(body.get("stop"))
        problem = sampling_error(body)
        if problem:
            raise ValueError(problem)
        check_tools(body.get("tools"), body.get("tool_choice"))
        agent = ah.resolve_agent(request, cfg, model)
        session = ah.resolve_session(request, agent, user, "openai")
        messages = chat_messages(body.get("messages"))
    except ValueError as exc:  # TargetError included
        return hc.invalid_request(str(exc))
    if not any(m["role"] == "user" for m in messages):
        return hc.invalid_request("Missing user message in `messages`.")
    stream = body.get("stream") is True
    params: dict[str, Any] = {"model": ah.model_override(request), "agentId": agent, "sessionKey": session,
                              "messages": messages, "stream": stream}
    if max_tokens is not None:
        params["maxTokens"] = max_tokens
    if isinstance(body.get("temperature"), int | float):
        params["temperature"] = body["temperature"]
    if user:
        params["user"] = user
    identity = {"id": f"chatcmpl_{uuid.uuid4()}", "created": int(time.time()), "model": model}
    run = ah.AgentRun(core, params).start()
    try:
        if not stream:
            return await _complete(request, core, run, identity)
        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get(
            "include_usage") is True
        return await _stream(request, core, run, identity, include_usage)
    finally:
        run.cancel()


async def _complete(request: web.Request, core: GatewayCore, run: ah.AgentRun,
                    identity: dict[str, Any]) -> web.StreamResponse:
    try:
        answer = await run.result(request)
    except ah.ClientGone:
        await ah.abandon(core, run, "openai-compat request")
        return web.Response(status=499)
    except MethodError as exc:
        status, message, type_ = ah.worker_error(exc)
        core.log("warning", f"openai-compat: chat completion failed: {message}")
        return hc.openai_error(status, message, type_)
    finish = "length" if answer.get("finishReason") == "length" else "stop"
    return hc.json_response(200, {
        **{"id": identity["id"], "object": "chat.completion", "created": identity["created"],
           "model": identity["model"]},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ah.answer_text(answer)},
                     "finish_reason": finish}],
        "usage": chat_usage(answer),
    })


def _chunk(identity: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": identity["id"], "object": "chat.completion.chunk", "created": identity["created"],
            "model": identity["model"], **fields}


def _choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "finish_reason": finish}]


async def _stream(request: web.Request, core: GatewayCore, run: ah.AgentRun, identity: dict[str, Any],
                  include_usage: bool) -> web.StreamResponse:
    sse = hc.SseStream(request)
    await sse.start()
    await sse.data(_chunk(identity, choices=_choice({"role": "assistant"})))
    async def send(batch: list[str]) -> bool:
        return await sse.data(*(_chunk(identity, choices=_choice({"content": d})) for d in batch))

    try:
        answer, streamed = await run.relay(request, send)
    except ah.ClientGone:
        await ah.abandon(core, run, "openai-compat stream")
        return sse.response
    except MethodError as exc:
        _status, message, type_ = ah.worker_error(exc)
        core.log("warning", f"openai-compat: streaming chat completion failed: {message}")
        return await sse.done(sse.data_lines({"error": {"message": message, "type": type_}}))
    final = ah.stream_tail(answer, streamed)
    if final is None:
        return await sse.done(sse.data_lines({"error": {"message": ah.NOT_APPEND_ONLY, "type": "api_error"}}))
    tail = []
    if final[1]:
        tail.append(_chunk(identity, choices=_choice({"content": final[1]})))
    finish = "length" if answer.get("finishReason") == "length" else "stop"
    tail.append(_chunk(identity, choices=_choice({}, finish)))
    if include_usage:
        tail.append(_chunk(identity, choices=[], usage=chat_usage(answer)))
    return await sse.done(sse.data_lines(*tail))
