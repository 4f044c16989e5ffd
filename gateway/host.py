"""What the gateway needs from the process that runs it (the supervisor implements this)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

Partial = Callable[[Any], Awaitable[None]]


class GatewayHost(Protocol):
    def readiness(self) -> dict[str, Any]:
        """{started, ready, pending, workers: {name: state}}."""

    def worker_view(self) -> list[dict[str, Any]]:
        """Per-worker rows as `openclaw-sup status` shows them."""

    def has_worker(self, name: str) -> bool:
        """Whether the config asks for a worker of that name (whatever its state)."""

    def worker_methods(self, name: str) -> frozenset[str]:
        """The methods a worker announced when it last became ready."""

    def workers_of_kind(self, kind_prefix: str) -> list[str]:
        """Names of wanted workers whose kind starts with `kind_prefix`."""

    async def call_worker(self, name: str, method: str, params: dict[str, Any], *, timeout: float,
                          partial: Partial | None = None) -> Any:
        """Send a request to a worker over the bus; raises MethodError (UNAVAILABLE when it is down)."""

    def gateway_config(self) -> dict[str, Any]:
        """The running config (unredacted; the gateway redacts what it shows)."""

    def config_path(self) -> Path: ...

    def log_file(self) -> Path | None: ...

    def request_restart(self, reason: str, delay_ms: int) -> dict[str, Any]:
        """Schedule an in-place restart: {ok, status: scheduled|coalesced, pid, restart, ...}."""

    def restart_target(self) -> dict[str, Any] | None:
        """{pid, ownerId, port} of the upstream gateway lock this process holds."""

    def supervisor_view(self) -> dict[str, Any]: ...

    def log(self, level: str, message: str, subsystem: str = "supervisor") -> None: ...

    def worker_samples(self) -> dict[str, list[list[Any]]]:
        """Per worker name (and "" for the supervisor): `[epoch ms, rss, cpu %]`, one per 10 s, 10 minutes."""

    def listeners_changed(self, on: bool) -> None:
        """Whether any client receives worker events now (workers send none while no client does)."""

    async def control_worker(self, name: str, action: str) -> dict[str, Any]:
        """`restart`, `stop` or `start` one worker; raises MethodError saying why not."""
