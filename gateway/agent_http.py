"""What the OpenAI-compatible routes share: the agent a request targets, and one `agent.complete` run.

Model ids are agent targets, as upstream: `openclaw`, `openclaw/default` (the default agent),
`openclaw/<agentId>`, `openclaw:<agentId>`, `agent:<agentId>`; the headers `x-openclaw-agent-id`,
`x-openclaw-session-key` and `x-openclaw-model` (a provider/model override) refine it. A request is stateless
(a fresh session) unless it names a `user` (a stable derived session) or a session key.

`AgentRun` wraps `host.call_worker("agent", "agent.complete", ...)` (the contract is in the agent worker's
docstring, workers/agent/__init__.py): partial answers `{delta}` are buffered in order and handed out by
`deltas()`, which also watches the client: when it goes away the bus request is cancelled, so nothing keeps
running here for a reader that is gone (the worker is not told; its answer is dropped).
"""

from __future__ import annotations

import asyncio
import collections
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openclaw_sup.gateway.http_common import client_gone
from openclaw_sup.gateway.protocol import MethodError

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

AGENT_WORKER = "agent"
COMPLETE_TIMEOUT_S = 600.0
DEFAULT_AGENT = "main"
MODEL_ID = "openclaw"
DEFAULT_MODEL_ID = "openclaw/default"
_AGENT_MODEL = re.compile(r"^(?:openclaw[:/]|agent:)([a-z0-9][a-z0-9_-]{0,63})$", re.IGNORECASE)
_AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$", re.IGNORECASE)
RESERVED_SESSION_PREFIXES = ("subagent:", "cron:", "acp:")
INVALID_MODEL = "Invalid `model`. Use `openclaw` or `openclaw/<agentId>`."
FALLBACK_TEXT = "No response from OpenClaw."
NOT_APPEND_ONLY = "Assistant output cannot be represented as an append-only response stream."


class TargetError(ValueError):
    """A request that names no usable agent or session; the message is upstream's 400 text."""


def agent_ids(cfg: dict[str, Any]) -> list[str]:
    """Configured agent ids (`agents.list[].id`), or the implicit `main` when there is no list."""
    entries = (cfg.get("agents") or {}).get("list")
    ids = [str(e["id"]).strip().lower() for e in entries or [] if isinstance(e, dict) and isinstance(e.get("id"), str)
           and e["id"].strip()] if isinstance(entries, list) else []
    return list(dict.fromkeys(ids)) or [DEFAULT_AGENT]


def default_agent(cfg: dict[str, Any]) -> str:
    entries = (cfg.get("agents") or {}).get("list")
    if isinstance(entries, list):
        for e in entries:
            if isinstance(e, dict) and e.get("default") is True and isinstance(e.get("id"), str):
                return e["id"].strip().lower()
    return agent_ids(cfg)[0]


def model_ids(cfg: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys([MODEL_ID, DEFAULT_MODEL_ID, *(f"openclaw/{a}" for a in agent_ids(cfg))]))


def is_agent_model(model: str) -> bool:
    raw = model.strip()
    return raw.lower() in (MODEL_ID, DEFAULT_MODEL_ID) or bool(_AGENT_MODEL.match(raw))


def agent_of_model(model: str | None, cfg: dict[str, Any]) -> str | None:
    raw = (model or "").strip()
    if not raw:
        return None
    if raw.lower() in (MODEL_ID, DEFAULT_MODEL_ID):
        return default_agent(cfg)
    m = _AGENT_MODEL.match(raw)
    return m.group(1).lower() if m else None


def resolve_agent(request: web.Request, cfg: dict[str, Any], model: str | None) -> str:
    if model and model.strip() and not is_agent_model(model):
        raise TargetError(INVALID_MODEL)
    known = agent_ids(cfg)
    header = (request.headers.get("x-openclaw-agent-id") or request.headers.get("x-openclaw-agent") or "").strip()
    if header:
        if not _AGENT_ID.match(header) or header.lower() not in known:
            raise TargetError(f"Unknown agent '{header}'.")
        return header.lower()
    agent = agent_of_model(model, cfg)
    if agent is not None:
        if agent not in known:
            raise TargetError(f"Unknown agent '{agent}'.")
        return agent
    return default_agent(cfg)


def resolve_session(request: web.Request, agent: str, user: str | None, prefix: str) -> str:
    explicit = (request.headers.get("x-openclaw-session-key") or "").strip()
    if explicit:
        lowered = explicit.lower()
        rest = lowered.split(":", 2)[2] if lowered.startswith("agent:") and lowered.count(":") >= 2 else lowered
        if any(p.startswith(RESERVED_SESSION_PREFIXES) for p in (lowered, rest)):
            raise TargetError("`x-openclaw-session-key` cannot use reserved internal session namespaces.")
        return explicit
    main_key = f"{prefix}-user:{user.strip()}" if user and user.strip() else f"{prefix}:{uuid.uuid4()}"
    return f"agent:{agent}:{main_key}"


def model_override(request: web.Request) -> str | None:
    raw = (request.headers.get("x-openclaw-model") or "").strip()
    return raw or None


def worker_error(exc: MethodError) -> tuple[int, str, str]:
    """(status, message, OpenAI error type) for a failed `agent.complete`.

    `INVALID_REQUEST` is the caller's fault (bad params, unknown model); `UNAVAILABLE` means the agent worker or
    its provider cannot answer now (down, timed out, no credentials); the worker's message names the fix.
    """
    message = str(exc) or "request failed"
    if exc.code == "INVALID_REQUEST":
        return 400, message, "invalid_request_error"
    if exc.code == "UNAVAILABLE":
        return 503, message, "api_error"
    return 500, message, "api_error"


class ClientGone(Exception):
    """The HTTP client disconnected; the run was cancelled."""


class AgentRun:
    """One `agent.complete` request on the bus, with its streamed deltas buffered in arrival order.

    `AgentRun.active` holds the runs whose bus request is still open, so a log line can show that a client
    that went away left nothing running here.
    """

    active: set[AgentRun] = set()

    def __init__(self, core: GatewayCore, params: dict[str, Any], timeout: float = COMPLETE_TIMEOUT_S) -> None:
        self.core = core
        self.params = params
        self.timeout = timeout
        self._buffer: collections.deque[str] = collections.deque()
        self._signal: asyncio.Future[None] | None = None
        self.task: asyncio.Task[Any] | None = None

    def start(self) -> AgentRun:
        self.task = asyncio.get_running_loop().create_task(self.core.host.call_worker(
            AGENT_WORKER, "agent.complete", self.params, timeout=self.timeout,
            partial=self._on_partial if self.params.get("stream") else None))
        AgentRun.active.add(self)
        self.task.add_done_callback(self._ended)
        return self

    def _poke(self) -> None:
        if self._signal is not None and not self._signal.done():
            self._signal.set_result(None)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        AgentRun.active.discard(self)
        self._poke()
        if not task.cancelled():
            task.exception()  # retrieved here; result() re-raises it for the handler that still waits

    async def _on_partial(self, payload: Any) -> None:
        delta = payload.get("delta") if isinstance(payload, dict) else None
        if isinstance(delta, str) and delta:
            self._buffer.append(delta)
            self._poke()

    async def deltas(self, request: web.Request) -> AsyncIterator[list[str]]:
        """Text chunks in order until the run ends, handed out as the batch that arrived since the last one (so
        the caller writes them to the socket at once); raises ClientGone (run cancelled) if the client leaves."""
        assert self.task is not None
        while True:
            if self._buffer:
                batch = list(self._buffer)
                self._buffer.clear()
                yield batch
                continue
            if self.task.done():
                await asyncio.sleep(0)  # partial callbacks scheduled just before the final answer
                if not self._buffer:
                    return
                continue
            self._signal = asyncio.get_running_loop().create_future()
            done, _ = await asyncio.wait([self._signal], timeout=0.5)
            if not done and client_gone(request):
                self.cancel()
                raise ClientGone()

    async def result(self, request: web.Request) -> dict[str, Any]:
        """The final answer; raises MethodError from the worker, or ClientGone."""
        assert self.task is not None
        while not self.task.done():
            await asyncio.wait([self.task], timeout=0.5)
            if not self.task.done() and client_gone(request):
                self.cancel()
                raise ClientGone()
        answer = self.task.result()
        if not isinstance(answer, dict):
            raise MethodError("UNAVAILABLE", "the agent worker sent a malformed agent.complete answer")
        return answer

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def relay(self, request: web.Request,
                    send: Callable[[list[str]], Awaitable[bool]]) -> tuple[dict[str, Any], str]:
        """Pass each batch of deltas to `send`, then wait for the final answer: (answer, the text streamed).
        Raises ClientGone when `send` finds the client gone, MethodError from the worker."""
        streamed = ""
        async for batch in self.deltas(request):
            streamed += "".join(batch)
            if not await send(batch):
                raise ClientGone()
        return await self.result(request), streamed

    async def stop(self) -> int:
        """Cancel the bus request and wait until it is gone; returns how many runs are still in flight."""
        self.cancel()
        if self.task is not None:
            await asyncio.wait([self.task])
        return len(AgentRun.active)


async def abandon(core: GatewayCore, run: AgentRun, what: str) -> None:
    """The client of `run` went away: cancel its bus request and say so, with what is still in flight."""
    left = await run.stop()
    core.log("info", f"{what}: client disconnected; run cancelled ({left} agent runs in flight)")


def answer_text(answer: dict[str, Any]) -> str:
    """The final answer's text, or FALLBACK_TEXT when it has none."""
    text = answer.get("text")
    return text if isinstance(text, str) and text else FALLBACK_TEXT


def stream_tail(answer: dict[str, Any], streamed: str) -> tuple[str, str] | None:
    """(the whole text, the part not streamed yet), or None when the final answer does not extend what was
    already streamed (an append-only stream cannot represent it)."""
    text = answer.get("text")
    text = text if isinstance(text, str) and text else (streamed or FALLBACK_TEXT)
    return (text, text[len(streamed):]) if text.startswith(streamed) else None


def usage_counts(answer: dict[str, Any]) -> tuple[int, int]:
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    def count(key: str) -> int:
        value = usage.get(key)
        return max(0, int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else 0
    return count("inputTokens"), count("outputTokens")
