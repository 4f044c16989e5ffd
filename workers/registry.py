"""The one registry of worker kinds: a kind's name -> its async entry point.

Kind modules register on import with `@register("name")`. The fork server imports the built-in modules and
any listed in the supervisor settings (`kinds`), so tests and plugins can add their own kinds.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openclaw_sup.workers.runtime import WorkerContext

KindMain = Callable[["WorkerContext"], Awaitable[None]]

BUILTIN_MODULES: tuple[str, ...] = ("openclaw_sup.workers.scheduler", "openclaw_sup.workers.agent",
                                    "openclaw_sup.workers.browser", "openclaw_sup.workers.channels.kinds",
                                    "openclaw_sup.workers.nodehost")

_KINDS: dict[str, KindMain] = {}


def register(name: str) -> Callable[[KindMain], KindMain]:
    def deco(fn: KindMain) -> KindMain:
        _KINDS[name] = fn
        return fn

    return deco


def get(name: str) -> KindMain:
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise LookupError(f"unknown worker kind {name!r} (registered kinds: {known})") from None


def names() -> list[str]:
    return sorted(_KINDS)


def load(modules: tuple[str, ...] | list[str]) -> list[str]:
    """Import kind modules; return one error line per module that failed, never raise."""
    errors = []
    for mod in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(mod)
        except Exception as exc:
            errors.append(f"cannot import worker kind module {mod!r}: {type(exc).__name__}: {exc}")
    return errors
