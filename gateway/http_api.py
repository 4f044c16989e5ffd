"""The HTTP API on the gateway port (spec/protocol.md section 6): the route table, in one place.

`GET /v1/models[/{id}]`, `POST /v1/chat/completions` (openai_http), `POST /v1/responses` (responses_http),
`POST /tools/invoke` (tools) and the webhooks under `hooks.path` (hooks, a middleware because the path is
configurable). Each handler reads the running config per request, so enabling or disabling an endpoint by a
config reload needs no re-bind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from openclaw_sup.gateway import openai_http, responses_http, tools
from openclaw_sup.gateway.hooks import Hooks

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

Handler = Callable[[web.Request, "GatewayCore"], Awaitable[web.StreamResponse]]


def add_http_api(app: web.Application, core: GatewayCore) -> Hooks:
    """Register the API routes and the webhook middleware on `app` (before it starts)."""

    def bind(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await fn(request, core)
        return handler

    for path, fn in (("/v1/models", openai_http.handle_models), ("/v1/models/{model_id:.+}", openai_http.handle_models),
                     ("/v1/chat/completions", openai_http.handle_chat),
                     ("/v1/responses", responses_http.handle_responses),
                     ("/tools/invoke", tools.handle_tools_invoke)):
        app.router.add_route("*", path, bind(fn))
    hooks = Hooks(core)
    app.middlewares.append(hooks.middleware)
    return hooks
