"""The one registry of worker kinds: a kind's name -> its async entry point.

Kind modules register on import with `@register("name")`. The built-in kinds are known by name up front
(`BUILTIN_KINDS`) and their modules imported on first use: the fork server imports a kind's module (and the
libraries every worker of that kind needs at once, its `SHARED_IMPORTS`) just before it forks the first
worker of that kind, so later workers of the kind share those pages and a kind nobody runs costs nothing.
Modules listed in the supervisor settings (`kinds`) are imported at boot, so tests and plugins can add
kinds or replace a built-in one.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openclaw_sup.workers.runtime import WorkerContext

KindMain = Callable[["WorkerContext"], Awaitable[None]]

CHANNELS = "openclaw_sup.workers.channels.kinds"
BUILTIN_KINDS: dict[str, str] = {
    "scheduler": "openclaw_sup.workers.scheduler",
    "agent": "openclaw_sup.workers.agent",
    "browser": "openclaw_sup.workers.browser",
    "node-host": "openclaw_sup.workers.nodehost",
    **{f"channel.{name}": CHANNELS for name in ("irc", "telegram", "webchat", "matrix", "discord", "slack")},
}

_KINDS: dict[str, KindMain] = {}


def register(name: str) -> Callable[[KindMain], KindMain]:
    def deco(fn: KindMain) -> KindMain:
        _KINDS[name] = fn
        return fn

    return deco


def preload(name: str) -> None:
    """Import what kind `name` runs, if it is a built-in; raises what the import raises.

    A kind registered before (a plugin's replacement of a built-in) stays as it was."""
    module = BUILTIN_KINDS.get(name)
    if module is None or (name in _KINDS and module not in sys.modules):
        return
    earlier = dict(_KINDS)
    mod = importlib.import_module(module)
    _KINDS.update(earlier)
    for shared in getattr(mod, "SHARED_IMPORTS", {}).get(name, ()):
        importlib.import_module(shared)


def get(name: str) -> KindMain:
    if name not in _KINDS and name in BUILTIN_KINDS:
        preload(name)
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(names()) or "none"
        raise LookupError(f"unknown worker kind {name!r} (registered kinds: {known})") from None


def names() -> list[str]:
    return sorted({*_KINDS, *BUILTIN_KINDS})


def provides(name: str) -> bool:
    return name in _KINDS or name in BUILTIN_KINDS


def load(modules: tuple[str, ...] | list[str]) -> list[str]:
    """Import plugin kind modules; return one error line per module that failed, never raise."""
    errors = []
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:
            errors.append(f"cannot import worker kind module {mod!r}: {type(exc).__name__}: {exc}")
    return errors
