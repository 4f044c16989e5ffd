"""The supervisor's own settings and the set of workers a config asks for.

The gateway config (`openclaw.json`) stays exactly upstream's, so the real `openclaw` CLI can share it.
openclaw-sup's tuning (restart policy, liveness bounds, bus limits, extra worker kinds) lives in a side file,
`OPENCLAW_SUP_CONFIG` or `<stateDir>/openclaw-sup.json`, JSON5, every key optional:

    {
      restart:  { backoffBaseMs, backoffMaxMs, jitter, stableAfterMs, crashLoopMax, crashLoopWindowMs,
                  failedRetryMs },
      liveness: { heartbeatIntervalMs, heartbeatTimeoutMs, startTimeoutMs, rssLimitMb },
      stop:     { busTimeoutMs, termTimeoutMs },
      bus:      { maxMessageBytes, rcvHwm, sndHwm },
      limits:   { nofile, maxConnections, preauthPerAddress, headTimeoutMs },
      forkServer: { standbys, standbyAtBoot, standbyKeepMs },
      kinds:    ["module.that.registers.kinds"],
      onDemand: ["browser"],   // workers forked by their first request, not at boot ([] keeps every one eager)
      workers:  { "<name>": { kind, options: {...}, restart: {...}, liveness: {...} } }
    }
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config.loader import ConfigError, load_json5
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.config.record import record


@record(frozen=True)
class RestartLimits:
    """Numbers for the restart policy (the logic is config/restart.py)."""

    backoff_base_ms: int = 100
    backoff_max_ms: int = 30_000
    jitter: float = 0.2
    stable_after_ms: int = 10_000
    crash_loop_max: int = 5
    crash_loop_window_ms: int = 60_000
    failed_retry_ms: int = 60_000


@record(frozen=True)
class Liveness:
    heartbeat_interval_ms: int = 1_000
    heartbeat_timeout_ms: int = 5_000
    start_timeout_ms: int = 30_000
    rss_limit_mb: float | None = None


@record(frozen=True)
class StopLadder:
    bus_timeout_ms: int = 3_000
    term_timeout_ms: int = 3_000


@record(frozen=True)
class BusLimits:
    max_message_bytes: int = 1 << 20
    rcv_hwm: int = 10_000
    snd_hwm: int = 1_000


@record(frozen=True)
class PortLimits:
    """Descriptors and the gateway port's admission; 0 means derived (see supervisor/fdlimit.py and
    gateway/admission.py): the soft descriptor limit raised to the hard one, a connection cap from it,
    `OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP` or upstream's 32."""

    nofile: int = 0
    max_connections: int = 0
    preauth_per_address: int = 0
    head_timeout_ms: int = 10_000


DEFAULT_ON_DEMAND = ("browser",)
"""The browser idles almost always (it serves browser tool calls and `browser.*`): it costs nothing until used."""


@record(frozen=True)
class WorkerSpec:
    """One wanted worker: its name (also its bus identity), its kind and its effective settings."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    restart: RestartLimits = RestartLimits()
    liveness: Liveness = Liveness()
    stop: StopLadder = StopLadder()
    on_demand: bool = False
    """Declared at boot, forked by the first request routed to it (socket-activation style)."""

    @cached_property
    def _digest(self) -> str:
        blob = orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()[:16]

    def digest(self) -> str:
        """Hash of the effective config: a worker is respawned on reload only when this changes."""
        return self._digest


@record(frozen=True)
class ForkServerTuning:
    standbys: int = 1
    """Processes the fork server keeps forked and half started, so a respawn skips the fork and the common set-up
    (about 4 ms of a recovery); each costs the memory of an idle process's own pages (~3 MB USS). 0: none."""
    standby_at_boot: bool = False
    """False: the standbys are made after the first unplanned worker exit and kept while exits keep coming, so a
    host where nothing crashes carries none (the first restart after a quiet spell forks as before). True: kept
    from boot on."""
    standby_keep_ms: int = 600_000
    """How long the standbys stay after the last unplanned exit (when not kept from boot)."""


@record(frozen=True)
class SupervisorSettings:
    restart: RestartLimits = RestartLimits()
    liveness: Liveness = Liveness()
    stop: StopLadder = StopLadder()
    bus: BusLimits = BusLimits()
    kind_modules: tuple[str, ...] = ()
    workers: tuple[WorkerSpec, ...] = ()
    source: str | None = None
    limits: PortLimits = PortLimits()
    on_demand: tuple[str, ...] = DEFAULT_ON_DEMAND
    fork_server: ForkServerTuning = ForkServerTuning()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _section(cls: type, base: Any, data: Any, where: str) -> Any:
    """Overlay a camelCase JSON object onto a dataclass instance, checking names and types."""
    if data is None:
        return base
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    known = {_camel(f.name): f for f in fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        default = getattr(base, f.name)
        ok_types: tuple[type, ...] = (int, float) if isinstance(default, float) or default is None else (int,)
        if value is None and default is None:
            changes[f.name] = None
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: {value!r} is not true or false")
            changes[f.name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, ok_types) or value < 0:
            raise ConfigError(f"{where}.{key}: {value!r} is not a non-negative number")
        changes[f.name] = value
    return replace(base, **changes)


def parse_settings(data: dict[str, Any], source: str) -> SupervisorSettings:
    where = f"Invalid config at {source}: "
    try:
        restart = _section(RestartLimits, RestartLimits(), data.get("restart"), "restart")
        liveness = _section(Liveness, Liveness(), data.get("liveness"), "liveness")
        stop = _section(StopLadder, StopLadder(), data.get("stop"), "stop")
        bus = _section(BusLimits, BusLimits(), data.get("bus"), "bus")
        limits = _section(PortLimits, PortLimits(), data.get("limits"), "limits")
        fork_server = _section(ForkServerTuning, ForkServerTuning(), data.get("forkServer"), "forkServer")
        kinds = data.get("kinds", [])
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ConfigError("kinds: expected a list of module names")
        on_demand = data.get("onDemand", list(DEFAULT_ON_DEMAND))
        if not isinstance(on_demand, list) or not all(isinstance(n, str) for n in on_demand):
            raise ConfigError('onDemand: expected a list of worker names, e.g. ["browser"] ([] starts every '
                              "worker at boot)")
        workers = []
        raw_workers = data.get("workers", {})
        if not isinstance(raw_workers, dict):
            raise ConfigError("workers: expected an object of name -> {kind, options}")
        for name, w in raw_workers.items():
            if not isinstance(w, dict) or not isinstance(w.get("kind"), str):
                raise ConfigError(f"workers.{name}: expected an object with a string 'kind'")
            opts = w.get("options", {})
            if not isinstance(opts, dict):
                raise ConfigError(f"workers.{name}.options: expected an object")
            workers.append(
                WorkerSpec(
                    name=name,
                    kind=w["kind"],
                    options=opts,
                    restart=_section(RestartLimits, restart, w.get("restart"), f"workers.{name}.restart"),
                    liveness=_section(Liveness, liveness, w.get("liveness"), f"workers.{name}.liveness"),
                    stop=_section(StopLadder, stop, w.get("stop"), f"workers.{name}.stop"),
                    on_demand=name in on_demand,
                )
            )
    except ConfigError as exc:
        raise ConfigError(where + str(exc)) from None
    return SupervisorSettings(restart, liveness, stop, bus, tuple(kinds), tuple(workers), source, limits,
                              tuple(on_demand), fork_server)


def settings_path(paths: ProfilePaths, env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("OPENCLAW_SUP_CONFIG"):
        return Path(env["OPENCLAW_SUP_CONFIG"]).expanduser()
    return paths.state_dir / "openclaw-sup.json"


def load_settings(paths: ProfilePaths, env: dict[str, str] | None = None) -> SupervisorSettings:
    path = settings_path(paths, env)
    return parse_settings(load_json5(path, env), str(path))
