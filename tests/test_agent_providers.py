"""Model providers against loopback HTTP servers that follow the documented wire formats: OpenAI chat completions
(SSE `data:` chunks, `[DONE]`, `stream_options.include_usage`) and Anthropic Messages (named SSE events); 429 with
retry-after honoured, a hanging provider timing out with an error naming it; model selection and credentials."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_servers import run_in_worker_loop
from aiohttp import web

from openclaw_sup.config import auth_profiles
from openclaw_sup.config.models import ModelConfigError, Target, agent_model, resolve
from openclaw_sup.workers.agent.providers import ChatRequest, ProviderError, call
from openclaw_sup.workers.agent.providers.http import retry_delay

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    for path, fn in routes.items():
        app.router.add_post(path, fn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def sse(request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        body = data if isinstance(data, str) else json.dumps(data)
        await resp.write(f"{head}data: {body}\n\n".encode())
        await asyncio.sleep(0)
    await resp.write_eof()
    return resp


def openai_chunks(words: list[str], usage: dict[str, int] | None = None) -> list[tuple[None, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test"}
    out: list[tuple[None, Any]] = [(None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                       "content": ""}}]})]
    out += [(None, {**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
            for w in words]
    out.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage:
        out.append((None, {**base, "choices": [], "usage": usage}))
    out.append((None, "[DONE]"))
    return out


def target(port: int, api: str = "openai-completions", key: str | None = "sk-test-123") -> Target:
    base = f"http://127.0.0.1:{port}/v1" if api == "openai-completions" else f"http://127.0.0.1:{port}"
    return Target("local", "gpt-test", api, base, key)


REQ = ChatRequest([{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}],
                  timeout_s=10)


def test_openai_streaming_wire_format() -> None:
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append((dict(request.headers), await request.json()))
        return await sse(request, openai_chunks(["Hel", "lo", " there"], {"prompt_tokens": 7,
                                                                          "completion_tokens": 3,
                                                                          "total_tokens": 10}))

    async def go() -> tuple[Any, list[str]]:
        runner, port = await serve({"/v1/chat/completions": chat})
        deltas: list[str] = []
        try:
            return await call(target(port), REQ, deltas.append), deltas
        finally:
            await runner.cleanup()

    result, deltas = run_in_worker_loop(go())
    assert deltas == ["Hel", "lo", " there"]
    assert (result.text, result.input_tokens, result.output_tokens, result.finish_reason) == \
        ("Hello there", 7, 3, "stop")
    headers, body = seen[0]
    assert headers["Authorization"] == "Bearer sk-test-123"
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == REQ.messages


def test_turns_reuse_one_keep_alive_connection() -> None:
    """Consecutive turns in a worker share the pooled session: the provider sees one client connection."""
    peers: list[Any] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return await sse(request, openai_chunks(["ok"]))

    async def go() -> None:
        runner, port = await serve({"/v1/chat/completions": chat})
        try:
            for _ in range(3):
                await call(target(port), REQ)
        finally:
            await runner.cleanup()

    run_in_worker_loop(go())
    assert len(peers) == 3 and peers[0] is not None and len(set(peers)) == 1, peers


def test_openai_length_finish_and_keyless_server() -> None:
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        events = openai_chunks(["cut"])
        events[-2] = (None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        return await sse(request, events)

    async def go() -> Any:
        runner, port = await serve({"/v1/chat/completions": chat})
        try:
            return await call(target(port, key=None), ChatRequest(REQ.messages, max_tokens=1, timeout_s=10))
        finally:
            await runner.cleanup()

    result = run_in_worker_loop(go())
    assert result.finish_reason == "length" and result.text == "cut"
    assert result.output_tokens == 1  # no usage chunk: counted from the text
    assert "Authorization" not in seen[0]


def test_anthropic_messages_streaming_wire_format() -> None:
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        seen.append((dict(request.headers), await request.json()))
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test",
               "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
        return await sse(request, [
            ("message_start", {"type": "message_start", "message": msg}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "Bonjour"}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": " !"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                  "stop_sequence": None},
                               "usage": {"output_tokens": 4}}),
            ("message_stop", {"type": "message_stop"}),
        ])

    async def go() -> tuple[Any, list[str]]:
        runner, port = await serve({"/v1/messages": messages})
        deltas: list[str] = []
        req = ChatRequest([*REQ.messages, {"role": "user", "content": "again"}], temperature=0.2, timeout_s=10)
        try:
            return await call(target(port, "anthropic-messages", "sk-ant-api-xyz"), req, deltas.append), deltas
        finally:
            await runner.cleanup()

    result, deltas = run_in_worker_loop(go())
    assert deltas == ["Bonjour", " !"]
    assert (result.text, result.input_tokens, result.output_tokens, result.finish_reason) == \
        ("Bonjour !", 12, 4, "stop")
    headers, body = seen[0]
    assert headers["x-api-key"] == "sk-ant-api-xyz" and headers["anthropic-version"] == "2023-06-01"
    assert body["system"] == "be brief" and body["stream"] is True and body["max_tokens"] == 4096
    assert body["messages"] == [{"role": "user", "content": "say hi\n\nagain"}]  # same-role turns merged
    assert body["temperature"] == 0.2


def test_anthropic_error_event_mid_stream() -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        return await sse(request, [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "Overloaded"}})])

    async def go() -> None:
        runner, port = await serve({"/v1/messages": messages})
        try:
            await call(target(port, "anthropic-messages"), REQ)
        finally:
            await runner.cleanup()

    with pytest.raises(ProviderError, match="overloaded_error: Overloaded"):
        run_in_worker_loop(go())


def test_429_retry_after_is_honoured() -> None:
    stamps: list[float] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return web.json_response({"error": {"message": "Rate limit reached", "type": "requests"}}, status=429,
                                     headers={"retry-after": "1"})
        return await sse(request, openai_chunks(["ok"]))

    async def go() -> Any:
        runner, port = await serve({"/v1/chat/completions": chat})
        try:
            return await call(target(port), REQ)
        finally:
            await runner.cleanup()

    result = run_in_worker_loop(go())
    assert result.text == "ok" and len(stamps) == 2
    assert stamps[1] - stamps[0] >= 0.95, "the retry came before the server's retry-after"


def test_5xx_retried_then_reported_and_401_names_the_fix() -> None:
    calls: list[int] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        return web.json_response({"error": {"message": "upstream exploded"}}, status=503,
                                 headers={"retry-after-ms": "10"})

    async def denied(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)

    async def go() -> tuple[ProviderError, ProviderError]:
        runner, port = await serve({"/v1/chat/completions": flaky, "/d/v1/chat/completions": denied})
        errors = []
        try:
            for t in (target(port), Target("openai", "gpt-x", "openai-completions", f"http://127.0.0.1:{port}/d/v1",
                                           "sk-wrong")):
                with pytest.raises(ProviderError) as info:
                    await call(t, REQ)
                errors.append(info.value)
        finally:
            await runner.cleanup()
        return errors[0], errors[1]

    unavailable, unauthorized = run_in_worker_loop(go())
    assert len(calls) == 3
    assert "HTTP 503" in str(unavailable) and "upstream exploded" in str(unavailable)
    assert unavailable.code == "UNAVAILABLE"
    assert "HTTP 401" in str(unauthorized) and "models auth paste-token --provider openai" in str(unauthorized)
    assert "sk-wrong" not in str(unauthorized)


def test_hanging_provider_times_out_naming_it() -> None:
    async def go() -> tuple[ProviderError, float]:
        gate = asyncio.Event()

        async def hang(request: web.Request) -> web.StreamResponse:
            await gate.wait()  # never answers until the test is over
            return web.Response()

        runner, port = await serve({"/v1/chat/completions": hang})
        t0 = time.monotonic()
        try:
            with pytest.raises(ProviderError) as info:
                await call(target(port), ChatRequest(REQ.messages, timeout_s=0.5))
            return info.value, time.monotonic() - t0
        finally:
            gate.set()
            await runner.cleanup()

    err, took = run_in_worker_loop(go())
    assert err.kind == "timeout" and took < 10
    assert "local (http://127.0.0.1:" in str(err) and "did not answer within 0.5s" in str(err)


def test_unreachable_provider_names_the_base_url() -> None:
    with pytest.raises(ProviderError, match=r"unreachable.*models.providers.local.baseUrl"):
        run_in_worker_loop(call(Target("local", "m", "openai-completions", "http://127.0.0.1:9/v1"), REQ))


def test_echo_provider_contract() -> None:
    deltas: list[str] = []
    req = ChatRequest([{"role": "system", "content": "sys words here"}, {"role": "user", "content": "first"},
                       {"role": "assistant", "content": "x"}, {"role": "user", "content": "hello  big\nworld"}])
    result = run_in_worker_loop(call(Target("echo", "echo", "echo"), req, deltas.append))
    assert result.text == "hello  big\nworld"
    assert deltas == ["hello  ", "big\n", "world"]
    assert result.input_tokens == 3 + 1 + 1 + 3 and result.output_tokens == 3


# -- model selection and credentials ------------------------------------------------------------------------

def test_model_selection_from_config_shapes(tmp_path: Path) -> None:
    agents = {"defaults": {"model": {"primary": "openai/gpt-4o-mini", "fallbacks": ["echo/echo"]},
                           "models": {"echo/echo": {"alias": "parrot"}}},
              "list": [{"id": "ops", "model": "ollama/llama3"}]}
    assert agent_model(agents).primary == "openai/gpt-4o-mini"
    assert agent_model(agents).fallbacks == ("echo/echo",)
    assert agent_model(agents, "ops").primary == "ollama/llama3"
    assert agent_model({}).configured is False
    assert resolve("parrot", agents=agents, models={}, state_dir=tmp_path, env={}).ref == "echo/echo"
    llama = resolve("ollama/llama3", agents=agents, models={}, state_dir=tmp_path, env={})
    assert (llama.api, llama.base_url, llama.api_key) == ("openai-completions", "http://127.0.0.1:11434/v1", None)
    custom = resolve("lcpp/qwen", agents=agents, state_dir=tmp_path, env={},
                     models={"providers": {"lcpp": {"baseUrl": "http://127.0.0.1:8080/v1", "apiKey": "k1"}}})
    assert (custom.api, custom.api_key, custom.key_source) == ("openai-completions", "k1",
                                                               "config:models.providers.lcpp.apiKey")
    with pytest.raises(ModelConfigError, match=r"unknown model provider 'nope'.*models.providers.nope"):
        resolve("nope/x", agents=agents, models={}, state_dir=tmp_path, env={})
    with pytest.raises(ModelConfigError, match=r"paste-token --provider openai.*OPENAI_API_KEY") as info:
        resolve("openai/gpt-4o-mini", agents=agents, models={}, state_dir=tmp_path, env={})
    assert info.value.code == "UNAVAILABLE"


def test_credentials_precedence_and_store_file(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-env"}
    t = resolve("openai/gpt-4o", agents={}, models={}, state_dir=tmp_path, env=env)
    assert (t.api_key, t.key_source) == ("sk-env", "env:OPENAI_API_KEY")
    path, pid = auth_profiles.store_token(tmp_path, "openai", "sk-pasted")
    assert pid == "openai:manual" and path == tmp_path / "agents/main/agent/auth-profiles.json"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    stored = json.loads(path.read_text())
    assert stored == {"version": 1, "profiles": {"openai:manual": {"type": "token", "provider": "openai",
                                                                   "token": "sk-pasted"}}}
    t = resolve("openai/gpt-4o", agents={}, models={}, state_dir=tmp_path, env=env, agent_id="other")
    assert (t.api_key, t.key_source) == ("sk-pasted", "auth-profiles:openai:manual")
    assert "sk-pasted" not in repr(t)
    ref = resolve("anthropic/c", agents={}, state_dir=tmp_path, env={"MY_KEY": "sk-ref"},
                  models={"providers": {"anthropic": {"apiKey": {"source": "env", "provider": "default",
                                                                 "id": "MY_KEY"}}}})
    assert ref.api_key == "sk-ref" and ref.base_url == "https://api.anthropic.com"


def test_a_credential_changed_on_disk_is_used_by_the_next_call(tmp_path: Path) -> None:
    """The parsed store is kept between calls, yet a token pasted, replaced (another writer's temp file and
    rename, as the real CLI writes it) or removed is what the next model call sees."""
    def key() -> str | None:
        found = auth_profiles.find(tmp_path, "openai")
        assert found == auth_profiles.find(tmp_path, "openai", "other")  # another agent falls back to main's file
        return found[2] if found else None

    assert key() is None
    path, _pid = auth_profiles.store_token(tmp_path, "openai", "sk-first")
    assert key() == "sk-first"
    replaced = path.with_name("auth-profiles.json.tmp")
    replaced.write_text(json.dumps({"version": 1, "profiles": {"openai:default": {
        "type": "api_key", "provider": "openai", "key": "sk-other-writer"}}}))
    replaced.rename(path)
    assert key() == "sk-other-writer"
    path.unlink()
    assert key() is None


def test_retry_delay_parsing() -> None:
    assert retry_delay({"retry-after": "2"}, 0) == 2.0
    assert retry_delay({"retry-after-ms": "250", "retry-after": "9"}, 0) == 0.25
    assert 0 <= retry_delay({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0) <= 0.01
    assert retry_delay({}, 1) == 1.0
