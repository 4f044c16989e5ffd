"""The HTTP API on the gateway port (spec/protocol.md section 6) against a real gateway and the real agent worker
with its offline `echo` provider: the official `openai` SDK on `/v1`, upstream's error bodies, limits, the
tools deny list, the webhooks and their failed-auth limiter, and a client that leaves mid-stream."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import Gateway, wait_for
from openclaw_sup.config.schema import validate
from openclaw_sup.gateway.client import GatewayClient

TOKEN = "http-api-test-token-0123456789"
HOOK_TOKEN = "hook-test-token-9876543210"
ECHO = {"agents": {"defaults": {"model": "echo/echo"}}}
BOTH = {"chatCompletions": {"enabled": True}, "responses": {"enabled": True}}
UNAUTHORIZED = {"error": {"message": "Unauthorized", "type": "unauthorized"}}

pytestmark = pytest.mark.timeout(120)


def http(gw: Gateway, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jbody(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, Any]:
    return answer[0], json.loads(answer[2])


def sdk(gw: Gateway, key: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key=key, max_retries=0, timeout=30)


def echo_gateway(factory: Any, config: dict[str, Any], **kw: Any) -> Gateway:
    cfg = {**ECHO, **config}
    cfg["gateway"] = {"auth": {"token": TOKEN}, **config.get("gateway", {})}
    return factory({"kinds": []}, config=cfg, **kw).start()


def test_openai_sdk_chat_and_responses_against_the_echo_agent(gateway_factory) -> None:
    gw = echo_gateway(gateway_factory, {"gateway": {"http": {"endpoints": BOTH}}})
    client = sdk(gw)

    assert [m.id for m in client.models.list()] == ["openclaw", "openclaw/default", "openclaw/main"]
    assert client.models.retrieve("openclaw/main").id == "openclaw/main"

    done = client.chat.completions.create(model="openclaw", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from the sdk"}])
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl_")
    assert done.choices[0].message.content == "hello from the sdk"
    assert done.choices[0].finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (6, 4, 10)

    chunks = list(client.chat.completions.create(model="openclaw/main", stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "one two three four"}]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == ["one ", "two ", "three ", "four"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)

    resp = client.responses.create(model="openclaw", input="a response please", instructions="short")
    assert resp.status == "completed" and resp.output_text == "a response please"
    assert resp.usage.output_tokens == 3

    events = list(client.responses.create(model="openclaw", input=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "streamed answer here"}]}],
        stream=True))
    types = [e.type for e in events]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * 3,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed answer here"
    assert events[-1].response.output_text == "streamed answer here"

    with pytest.raises(openai.AuthenticationError) as bad_key:
        sdk(gw, "wrong-token").chat.completions.create(model="openclaw", messages=[{"role": "user", "content": "x"}])
    assert bad_key.value.status_code == 401 and bad_key.value.body == UNAUTHORIZED["error"]
    assert jbody(http(gw, "GET", "/v1/models")) == (401, UNAUTHORIZED)
    assert jbody(http(gw, "POST", "/v1/responses", {"model": "openclaw", "input": "x"})) == (401, UNAUTHORIZED)

    with pytest.raises(openai.BadRequestError) as bad_model:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert bad_model.value.body == {"message": "Invalid `model`. Use `openclaw` or `openclaw/<agentId>`.",
                                    "type": "invalid_request_error"}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openclaw/nobody")


def test_limits_error_bodies_worker_errors_and_disabled_chat(gateway_factory) -> None:
    gw = echo_gateway(gateway_factory, {"gateway": {"http": {"endpoints": BOTH}}})
    chat = "/v1/chat/completions"
    user = [{"role": "user", "content": "hi"}]

    def bad(body: Any, headers: dict[str, str] | None = None, path: str = chat) -> tuple[int, Any]:
        return jbody(http(gw, "POST", path, body, {**bearer(), **(headers or {})}))

    def invalid(message: str) -> tuple[int, Any]:
        return 400, {"error": {"message": message, "type": "invalid_request_error"}}

    assert bad({"model": "openclaw", "messages": user, "temperature": 3}) == invalid(
        "`temperature` must be between 0 and 2.")
    assert bad({"model": "openclaw", "messages": user, "stop": ["a", "b", "c", "d", "e"]}) == invalid(
        "Invalid stop: stop supports at most 4 sequences")
    assert bad({"model": "openclaw", "messages": user, "max_tokens": 0}) == invalid(
        "max_tokens must be a positive safe integer")
    assert bad({"model": "openclaw", "messages": [{"role": "system", "content": "only system"}]}) == invalid(
        "Missing user message in `messages`.")
    assert bad({"model": "openclaw/ghost", "messages": user}) == invalid("Unknown agent 'ghost'.")
    assert bad({"model": "openclaw", "messages": user}, {"x-openclaw-session-key": "cron:job-1"}) == invalid(
        "`x-openclaw-session-key` cannot use reserved internal session namespaces.")
    assert bad({"model": "openclaw", "input": "x", "colour": "red"}, path="/v1/responses") == invalid(
        ": Unrecognized key(s) in object: 'colour'")
    assert bad({"model": "openclaw", "input": [{"type": "message", "role": "user", "content": "x"}],
                "temperature": 2.5}, path="/v1/responses") == invalid("temperature: Number must be between 0 and 2")

    big = b'{"model": "openclaw", "messages": [], "pad": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    assert jbody(http(gw, "POST", chat, headers=bearer(), raw=big)) == (
        413, {"error": {"message": "Payload too large", "type": "invalid_request_error"}})
    status, headers, text = http(gw, "GET", chat, headers=bearer())
    assert (status, headers.get("Allow"), text) == (405, "POST", b"Method Not Allowed")

    # the worker's INVALID_REQUEST is the caller's 400, its UNAVAILABLE a 503; both carry the worker's message
    status, body = bad({"model": "openclaw", "messages": user}, {"x-openclaw-model": "nosuchprovider/x"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "nosuchprovider" in \
        body["error"]["message"]
    status, body = bad({"model": "openclaw", "messages": user}, {"x-openclaw-model": "openai/gpt-4o-mini"})
    assert status == 503 and body["error"]["type"] == "api_error" and "paste-token" in body["error"]["message"]
    status, _h, raw = http(gw, "POST", chat, {"model": "openclaw", "messages": user, "stream": True},
                           {**bearer(), "x-openclaw-model": "openai/gpt-4o-mini"})
    lines = [ln for ln in raw.decode().split("\n\n") if ln]
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][len("data: "):])["error"]["type"] == "api_error"

    gw.stop()
    off = echo_gateway(gateway_factory, {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}})
    status, _h, text = http(off, "POST", chat, {"model": "openclaw", "messages": user}, bearer())
    assert (status, text) == (404, b"Not Found")
    assert http(off, "GET", "/v1/models", headers=bearer())[0] == 200  # responses alone enables the model list
    assert jbody(http(off, "POST", "/v1/responses", {"model": "openclaw", "input": "still here"}, bearer()))[1][
        "output"][0]["content"][0]["text"] == "still here"


def test_tools_invoke_deny_list_and_http_auth_lockout(gateway_factory) -> None:
    gw = echo_gateway(gateway_factory, {"gateway": {
        "auth": {"token": TOKEN, "rateLimit": {"maxAttempts": 3, "exemptLoopback": False, "lockoutMs": 60_000}},
        "tools": {"allow": ["cron"], "deny": ["agents_list"]}}}, extra_env={"OPENCLAW_SKIP_CRON": ""})

    def invoke(body: Any, token: str = TOKEN) -> tuple[int, Any]:
        return jbody(http(gw, "POST", "/tools/invoke", body, bearer(token)))

    for name in ("exec", "shell", "fs_write", "sessions_spawn", "gateway", "nodes", "apply_patch"):
        assert invoke({"tool": name}) == (404, {"ok": False, "error": {"type": "not_found",
                                                                       "message": f"Tool not available: {name}"}})
    assert invoke({"name": "agents_list"})[0] == 404  # gateway.tools.deny
    assert invoke({"name": "no_such_tool"})[0] == 404
    assert invoke({}) == (400, {"ok": False, "error": {"type": "invalid_request",
                                                       "message": "tools.invoke requires name"}})
    status, body = invoke({"tool": "cron", "action": "status"})  # gateway.tools.allow lifts the default deny
    assert status == 200 and body["ok"] is True and "enabled" in body["result"]["details"]
    status, body = invoke({"tool": "automations", "action": "explode"})
    assert status == 400 and body["error"]["type"] == "tool_error" and "action must be one of" in \
        body["error"]["message"]
    assert http(gw, "GET", "/tools/invoke", headers=bearer())[0] == 405

    # failed HTTP auth: a missing token is not a guess; 3 wrong ones lock this address out, even for the right one
    for _ in range(4):
        assert jbody(http(gw, "POST", "/tools/invoke", {"tool": "cron"})) == (401, UNAUTHORIZED)
    for _ in range(3):
        assert invoke({"tool": "cron", "action": "status"}, "guess")[0] == 401
    status, headers, raw = http(gw, "POST", "/tools/invoke", {"tool": "cron", "action": "status"}, bearer())
    assert status == 429 and 55 <= int(headers["Retry-After"]) <= 60
    assert json.loads(raw) == {"error": {"message": "Too many failed authentication attempts. Please try again "
                                                    "later.", "type": "rate_limited"}}


def test_hooks_wake_and_agent_with_token_forms_and_rate_limit(gateway_factory) -> None:
    gw = echo_gateway(gateway_factory, {"hooks": {"enabled": True, "token": HOOK_TOKEN}},
                      extra_env={"OPENCLAW_SKIP_CRON": ""})
    good = {"Authorization": f"Bearer {HOOK_TOKEN}"}

    assert jbody(http(gw, "POST", "/hooks/wake", {"text": "new mail", "mode": "next-heartbeat"}, good)) == (
        200, {"ok": True, "mode": "next-heartbeat", "eventOutcome": "queued"})
    assert jbody(http(gw, "POST", "/hooks/wake", {}, good)) == (400, {"ok": False, "error": "text required"})
    watcher = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=20)
    watcher.connect()
    assert jbody(http(gw, "POST", "/hooks/wake", {"text": "build finished"}, good))[1]["mode"] == "now"
    beat = watcher.next_event("heartbeat", timeout=20)["payload"]  # the scheduler ran the agent's heartbeat now
    assert beat["agentId"] == "main"
    watcher.close()

    status, body = jbody(http(gw, "POST", "/hooks/agent", {"message": "summarise the inbox", "waitForCompletion": True},
                              {"X-OpenClaw-Token": HOOK_TOKEN}))
    assert status == 200 and body["ok"] is True and body["runId"]
    assert body["completion"]["status"] == "ok" and body["completion"]["summary"] == "summarise the inbox"
    status, body = jbody(http(gw, "POST", "/hooks/agent", {"message": "fire and forget"}, good))
    assert status == 200 and set(body) == {"ok", "runId"}
    once = {**good, "Idempotency-Key": "delivery-42"}
    first = jbody(http(gw, "POST", "/hooks/agent", {"message": "only once"}, once))[1]["runId"]
    assert jbody(http(gw, "POST", "/hooks/agent", {"message": "only once"}, once))[1]["runId"] == first
    assert jbody(http(gw, "POST", "/hooks/agent", {"message": "another"}, once))[1]["runId"] != first
    assert jbody(http(gw, "POST", "/hooks/agent", {"name": "x"}, good)) == (400, {"ok": False,
                                                                              "error": "message required"})
    assert jbody(http(gw, "POST", "/hooks/agent", {"message": "m", "agentId": "ghost"}, good)) == (
        400, {"ok": False, "error": 'unknown agentId "ghost"'})
    assert jbody(http(gw, "POST", "/hooks/agent", {"message": "m", "sessionKey": "hook:mine"}, good))[1]["error"] \
        .startswith("sessionKey is disabled for externally supplied hook payload values")
    status, _h, text = http(gw, "POST", f"/hooks/wake?token={HOOK_TOKEN}", {"text": "x"})
    assert status == 400 and b"query parameters are not allowed" in text
    assert http(gw, "GET", "/hooks/wake", headers=good)[0] == 405
    assert http(gw, "POST", "/v1/chat/completions", {"model": "openclaw"}, bearer())[0] == 404  # endpoints off

    # 20 wrong tokens in a minute are 401s; the 21st is 429 with Retry-After (loopback is not exempt for hooks)
    for i in range(20):
        assert http(gw, "POST", "/hooks/wake", {"text": "x"}, {"X-OpenClaw-Token": f"guess-{i}"})[:3:2] == (
            401, b"Unauthorized")
    status, headers, text = http(gw, "POST", "/hooks/wake", {"text": "x"}, {"Authorization": "Bearer guess"})
    assert (status, text) == (429, b"Too Many Requests") and 55 <= int(headers["Retry-After"]) <= 60
    assert http(gw, "POST", "/hooks/wake", {"text": "right token still passes"}, good)[0] == 200
    assert http(gw, "POST", "/hooks/wake", {"text": "x"}, {"X-OpenClaw-Token": "guess"})[0] == 401  # count reset


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_client_leaving_mid_stream_cancels_the_run(gateway_factory, tmp_path: Path) -> None:
    """A slow provider (test kind sup_slow_agent: one word per 0.2 s) so the client can leave mid-stream."""
    runs = tmp_path / "runs"  # the slow agent notes `started` there as each run begins
    gw = gateway_factory({"kinds": ["sup_slow_agent"], "workers": {"agent": {"kind": "agent", "options": {
        "logFile": str(runs)}}}}, config={"gateway": {"auth": {"token": TOKEN}, "http": {"endpoints": BOTH}}}).start()
    words = " ".join(f"w{i}" for i in range(60))
    n_cancelled = 0
    for path, body, marker, what in (
            ("/v1/chat/completions", {"model": "openclaw", "stream": True,
                                      "messages": [{"role": "user", "content": words}]}, b"w1 ", "openai-compat"),
            ("/v1/responses", {"model": "openclaw", "stream": True, "input": words}, b"w1 ", "openresponses")):
        payload = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
            assert marker in _read_until(sock, marker)
        line = f"{what} stream: client disconnected; run cancelled (0 agent runs in flight)"
        wait_for(lambda line=line: line in gw.log_text(), 5, what=line)  # the whole answer would take 12 s
        # ... and the worker stopped working on it (the supervisor sent it a `cancel` for that request).
        wait_for(lambda n=n_cancelled: gw.log_text().count("slow agent: run cancelled after") > n, 5,
                 what="the agent worker to cancel the run")
        n_cancelled += 1
    payload = json.dumps({"model": "openclaw", "messages": [{"role": "user", "content": words}]}).encode()
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:  # non-stream: leaves while the run goes on
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        wait_for(lambda: runs.exists() and runs.read_text().count("started") == 3, 10, what="the non-stream run")
    line = "openai-compat request: client disconnected; run cancelled (0 agent runs in flight)"
    wait_for(lambda: line in gw.log_text(), 5, what=line)
    wait_for(lambda: gw.log_text().count("slow agent: run cancelled after") > n_cancelled, 5,
             what="the agent worker to cancel the non-stream run")
    status, answer = jbody(http(gw, "POST", "/v1/chat/completions",
                                {"model": "openclaw", "messages": [{"role": "user", "content": "still serving"}]},
                                bearer()))
    assert status == 200 and answer["choices"][0]["message"]["content"] == "still serving"


def test_hooks_enabled_without_a_token_is_an_invalid_config() -> None:
    report = validate({"hooks": {"enabled": True}})
    assert [(i.path, i.message) for i in report.errors] == [
        ("hooks.token", "hooks.enabled requires hooks.token (set hooks.token to a long random secret)")]
    assert validate({"hooks": {"enabled": True, "token": HOOK_TOKEN}}).ok
    assert validate({"hooks": {"enabled": False}}).ok


def test_final_text_rules_shared_by_both_streaming_apis() -> None:
    """What is sent after the last delta: the rest of the answer, the streamed text if the answer has none,
    the fallback if nothing at all, and a failure when the answer does not extend what was streamed."""
    from openclaw_sup.gateway import agent_http as ah

    assert ah.stream_tail({"text": "hello world"}, "hello ") == ("hello world", "world")
    assert ah.stream_tail({"text": ""}, "streamed") == ("streamed", "")
    assert ah.stream_tail({}, "") == (ah.FALLBACK_TEXT, ah.FALLBACK_TEXT)
    assert ah.stream_tail({"text": "goodbye"}, "hello") is None
    assert ah.answer_text({"text": 3}) == ah.FALLBACK_TEXT and ah.answer_text({"text": "hi"}) == "hi"
