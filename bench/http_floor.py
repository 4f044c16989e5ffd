"""The floor the HTTP API bench compares with: the echo provider behind the smallest OpenAI-shaped server.

`python bench/http_floor.py --port P` serves `POST /v1/chat/completions` (stream and not) from one aiohttp
process on uvloop, calling the same echo provider code in-process and answering the same JSON and SSE chunks
our gateway does, with no auth, no supervisor, no bus and no worker. What our gateway costs on top of this
is the overhead bench/http_api.py reports. It prints `ready` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson
import uvloop
from aiohttp import web

from openclaw_sup.config.models import Target
from openclaw_sup.workers.agent.providers import ChatRequest, call

ECHO = Target(provider="echo", model="echo", api="echo")


async def chat(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    ident = {"id": f"chatcmpl_{uuid.uuid4()}", "created": int(time.time()), "model": body.get("model", "openclaw")}
    req = ChatRequest(messages=[{"role": m["role"], "content": m["content"]} for m in body["messages"]])
    if not body.get("stream"):
        done = await call(ECHO, req)
        return web.Response(body=orjson.dumps({
            **ident, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "finish_reason": done.finish_reason}],
            "usage": {"prompt_tokens": done.input_tokens, "completion_tokens": done.output_tokens,
                      "total_tokens": done.input_tokens + done.output_tokens}}), content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    chunks: list[str] = []

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({**ident, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

    await resp.write(chunk({"role": "assistant"}))
    done = await call(ECHO, req, chunks.append)
    for text in chunks:
        await resp.write(chunk({"content": text}))
    await resp.write(chunk({}, done.finish_reason))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    uvloop.run(serve(p.parse_args().port))
