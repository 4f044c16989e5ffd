"""`openclaw-sup gateway install|uninstall|start|stop|restart`: the gateway as a systemd or launchd service.

A unit pins the absolute path of this installation's `openclaw-sup`, the resolved `--port` and `--profile`,
and the state and config paths, so the service runs exactly what the CLI saw at install time. Secrets never
go into the unit: they land in a 0600 EnvironmentFile under `<stateDir>/service-env/`.

Where no service manager answers (no systemctl, or systemd is not PID 1, as in containers), install and
uninstall still write and remove the files and say so; start/stop/restart then fail with upstream's
"No supported service manager detected" and the command that runs the gateway by hand.

`OPENCLAW_SUP_UNIT_DIR` / `OPENCLAW_SUP_LAUNCHD_DIR` move the unit and plist directories and
`OPENCLAW_SUP_SERVICE_MANAGER=systemd|launchd` picks the manager (tests and packagers).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, cast
from xml.parsers.expat import ExpatError

import typer

from openclaw_sup import launchd, systemd
from openclaw_sup.cli.common import fail, profile_paths
from openclaw_sup.config.document import read_config
from openclaw_sup.config.loader import ConfigError
from openclaw_sup.config.paths import DEFAULT_PORT, DEV_PORT, ProfilePaths, ensure_private_dir, resolve
from openclaw_sup.config.settings import load_settings

Scope = Literal["user", "system"]
Kind = Literal["systemd", "launchd"]

NO_MANAGER = "No supported service manager detected"
MANAGER_ENV = "OPENCLAW_SUP_SERVICE_MANAGER"
SECRET_ENV = ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD", "TELEGRAM_BOT_TOKEN")
PASSTHROUGH_ENV = ("OPENCLAW_SUP_CONFIG", "OPENCLAW_LOG_LEVEL", "OPENCLAW_SKIP_CHANNELS", "OPENCLAW_SKIP_CRON",
                   "OPENCLAW_ALLOW_MULTI_GATEWAY")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNNING_STATES = {"initializing", "starting", "running", "degraded", "maintenance", "stopping"}
STATE_BASE = Path("/var/lib")
COMMAND_TIMEOUT_S = 20.0

SystemFlag = Annotated[bool, typer.Option("--system", help="a system unit (root) rather than a user unit")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON")]


# ================================================================ helpers

def _env() -> dict[str, str]:
    return dict(os.environ)




def _run(cmd: list[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a manager command; a missing binary or a hang becomes a failed result, never an exception."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{' '.join(cmd)}: no answer within {timeout:g}s")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def entry_point() -> str:
    """This installation's `openclaw-sup` script (next to the running interpreter), as an absolute path."""
    sibling = Path(os.path.abspath(sys.executable)).parent / "openclaw-sup"
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which("openclaw-sup")
    if found:
        return os.path.abspath(found)
    return os.path.abspath(sys.argv[0])


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def manager_kind(env: dict[str, str] | None = None) -> Kind:
    env = _env() if env is None else env
    forced = env.get(MANAGER_ENV, "").strip().lower()
    if forced in ("systemd", "launchd"):
        return cast(Kind, forced)
    return "launchd" if sys.platform == "darwin" else "systemd"


def gateway_port(cfg: dict[str, Any], dev: bool, env: dict[str, str]) -> int:
    """The port the CLI would start the gateway on: `OPENCLAW_GATEWAY_PORT` > `gateway.port` > default."""
    raw = env.get("OPENCLAW_GATEWAY_PORT", "")
    if raw.strip().isdigit():
        return int(raw)
    gateway = cfg.get("gateway")
    port = gateway.get("port") if isinstance(gateway, dict) else None
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    return DEV_PORT if dev else DEFAULT_PORT


def config_data(path: Path) -> dict[str, Any]:
    """The config as far as it parses (schema errors do not matter for reading a port); {} otherwise."""
    try:
        return read_config(path).data
    except ConfigError:
        return {}


def config_validity(path: Path) -> str:
    """`valid`, `missing` (defaults apply) or `invalid: <first problem>`."""
    if not path.exists():
        return "missing"
    try:
        cfg = read_config(path)
    except ConfigError as exc:
        return f"invalid: {_first_line(str(exc))}"
    if cfg.valid:
        return "valid"
    first = cfg.report.errors[0].line().strip().removeprefix("- ") if cfg.report.errors else "schema errors"
    return f"invalid: {first}"


def manual_command(argv: list[str]) -> str:
    return shlex.join(argv)


# ================================================================ service managers

@dataclass
class Manager:
    """A service manager as this process can reach it (or why it cannot)."""

    kind: Kind
    scope: Scope
    available: bool
    detail: str = ""
    binary: str | None = None

    def systemctl(self, *args: str) -> list[str]:
        return [self.binary or "systemctl", *(["--user"] if self.scope == "user" else []), "--no-pager", *args]

    @property
    def launchd_domain(self) -> str:
        return "system" if self.scope == "system" else f"gui/{os.getuid()}"


def detect_manager(kind: Kind, scope: Scope, env: dict[str, str] | None = None) -> Manager:
    """Is there a manager to talk to? systemd must answer `is-system-running` with a live state."""
    env = _env() if env is None else env
    if kind == "launchd":
        binary = shutil.which("launchctl", path=env.get("PATH"))
        if binary is None or sys.platform != "darwin":
            return Manager(kind, scope, False, "launchctl not found", binary)
        return Manager(kind, scope, True, "", binary)
    binary = shutil.which("systemctl", path=env.get("PATH"))
    if binary is None:
        return Manager(kind, scope, False, "systemctl not found", None)
    mgr = Manager(kind, scope, False, "", binary)
    res = _run(mgr.systemctl("is-system-running"), timeout=10)
    state = _first_line(res.stdout)
    if state in RUNNING_STATES:
        mgr.available = True
        return mgr
    flag = " --user" if scope == "user" else ""
    mgr.detail = f"systemctl{flag} is-system-running: {state or _first_line(res.stderr) or f'exit {res.returncode}'}"
    return mgr


def no_manager_text(mgr: Manager, argv: list[str] | None) -> str:
    text = f"{NO_MANAGER} ({mgr.detail})." if mgr.detail else f"{NO_MANAGER}."
    if argv:
        text += f"\nRun the gateway in the foreground instead: {manual_command(argv)}"
    return text


# ================================================================ the installed service

@dataclass
class InstalledService:
    """A unit or plist found on disk, and what it says about the service it starts."""

    kind: Kind
    scope: Scope
    name: str
    path: Path
    argv: list[str]
    environment: dict[str, str]
    user: str | None
    env_files: list[Path] = field(default_factory=list)

    def _arg(self, flag: str) -> str | None:
        for i, word in enumerate(self.argv):
            if word == flag and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if word.startswith(flag + "="):
                return word.split("=", 1)[1]
        return None

    @property
    def port(self) -> int | None:
        raw = self._arg("--port")
        return int(raw) if raw and raw.isdigit() else None

    @property
    def profile(self) -> str | None:
        return "dev" if "--dev" in self.argv else self._arg("--profile")

    @property
    def gateway_argv(self) -> list[str]:
        """The gateway command itself, without a launchd `sh -c` wrapper in front."""
        for i, word in enumerate(self.argv):
            if word.endswith("openclaw-sup") and "gateway" in self.argv[i:]:
                return self.argv[i:]
        return self.argv

    def home(self) -> Path:
        if self.scope == "system" and self.user:
            try:
                return Path(pwd.getpwnam(self.user).pw_dir)
            except KeyError:
                return Path("/")
        return Path(os.environ.get("HOME") or Path.home())

    def paths(self) -> ProfilePaths:
        """The profile paths the service resolves when it starts (its environment, its profile, its home)."""
        env = {"HOME": str(self.home()), **self.environment}
        try:
            return resolve(self.profile, False, env)
        except ValueError:
            return resolve(None, False, env)


def _unit_candidates(kind: Kind, profile: str | None, env: dict[str, str]) -> list[tuple[Scope, Path]]:
    out: list[tuple[Scope, Path]] = []
    for scope in ("user", "system"):
        if kind == "systemd":
            path = systemd.unit_dir(scope, env) / systemd.unit_name(profile)
        else:
            path = launchd.plist_dir(scope, env) / f"{launchd.label(profile)}.plist"
        if all(p != path for _, p in out):
            out.append((scope, path))
    return out


def load_installed(kind: Kind, path: Path, scope_hint: Scope) -> InstalledService | None:
    try:
        if kind == "systemd":
            unit = systemd.parse_unit(path)
            return InstalledService(kind, unit.scope, path.name, path, unit.exec_start, unit.environment, unit.user,
                                    unit.environment_files)
        data = launchd.parse_plist(path)
    except (OSError, ValueError, ExpatError):
        return None
    args = [str(a) for a in data.get("ProgramArguments") or []]
    env = {str(k): str(v) for k, v in (data.get("EnvironmentVariables") or {}).items()}
    user = data.get("UserName")
    scope: Scope = "system" if user or scope_hint == "system" else "user"
    return InstalledService(kind, scope, str(data.get("Label") or path.stem), path, args, env,
                            str(user) if user else None)


def find_installed(profile: str | None, env: dict[str, str] | None = None,
                   scope: Scope | None = None) -> InstalledService | None:
    """The installed service of a profile: the user unit first, then the system one (or only `scope`)."""
    env = _env() if env is None else env
    kind = manager_kind(env)
    for cand_scope, path in _unit_candidates(kind, profile, env):
        if path.is_file():
            found = load_installed(kind, path, cand_scope)
            if found is not None and (scope is None or found.scope == scope):
                return found
    return None


def service_state(svc: InstalledService, mgr: Manager) -> dict[str, Any]:
    """What the manager says about the unit: load/enable/active state and main pid."""
    if svc.kind == "systemd":
        res = _run(mgr.systemctl("show", svc.name, "--property=LoadState,UnitFileState,ActiveState,SubState,"
                                                   "MainPID,ExecMainStatus,Result"))
        props = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        return {"load": props.get("LoadState") or "unknown", "enabled": props.get("UnitFileState") or "unknown",
                "active": props.get("ActiveState") or "unknown", "sub": props.get("SubState") or "",
                "mainPid": int(props["MainPID"]) if props.get("MainPID", "").isdigit() else None,
                "lastExit": props.get("ExecMainStatus"), "result": props.get("Result")}
    res = _run([mgr.binary or "launchctl", "print", f"{mgr.launchd_domain}/{svc.name}"])
    if res.returncode != 0:
        return {"load": "not-loaded", "enabled": "unknown", "active": "inactive", "sub": "", "mainPid": None}
    fields = {}
    for line in res.stdout.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep:
            fields.setdefault(key, value)
    state = fields.get("state", "unknown")
    pid = fields.get("pid", "")
    return {"load": "loaded", "enabled": "enabled", "active": "active" if state == "running" else "inactive",
            "sub": state, "mainPid": int(pid) if pid.isdigit() else None, "lastExit": fields.get("last exit code")}


@dataclass
class ServiceView:
    """Service and config as `gateway status` and `doctor` report them, with any drift between CLI and service."""

    kind: Kind
    name: str
    installed: InstalledService | None
    manager: Manager | None
    state: dict[str, Any] | None
    cli_config: Path
    cli_validity: str
    cli_port: int
    service_config: Path | None = None
    service_validity: str | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)

    def service_line(self) -> str:
        if self.installed is None:
            return f"Service: not installed ({self.name}; {self.kind})"
        svc = self.installed
        where = f"{svc.name} ({svc.kind} {svc.scope}"
        if self.manager is None or not self.manager.available:
            detail = f": {self.manager.detail}" if self.manager and self.manager.detail else ""
            return f"Service: {where}; installed at {svc.path}; no supported service manager detected{detail})"
        st = self.state or {}
        active = st.get("active", "unknown") + (f" ({st['sub']})" if st.get("sub") else "")
        pid = f", pid {st['mainPid']}" if st.get("mainPid") else ""
        return f"Service: {where}; {st.get('load', 'unknown')}, {st.get('enabled', 'unknown')}, {active}{pid})"

    def lines(self) -> list[str]:
        out = [self.service_line(), f"Config (cli): {self.cli_config} ({self.cli_validity})"]
        if self.service_config is not None:
            out.append(f"Config (service): {self.service_config} ({self.service_validity})")
        out += [f"Warning: {w['message']}; fix: {w['fix']}" for w in self.warnings]
        return out

    def to_json(self) -> dict[str, Any]:
        svc = self.installed
        service: dict[str, Any] = {"manager": self.kind, "name": self.name, "installed": svc is not None}
        if svc is not None:
            service.update(scope=svc.scope, path=str(svc.path), execStart=svc.argv, port=svc.port,
                           profile=svc.profile, user=svc.user)
        if self.manager is not None:
            service.update(available=self.manager.available, detail=self.manager.detail or None)
        if self.state is not None:
            service["state"] = self.state
        return {"service": service,
                "config": {"cli": {"path": str(self.cli_config), "status": self.cli_validity},
                           "service": None if self.service_config is None else
                           {"path": str(self.service_config), "status": self.service_validity}},
                "warnings": self.warnings}

    @property
    def active(self) -> bool:
        return bool(self.state and self.state.get("active") == "active")


def inspect_service(paths: ProfilePaths, env: dict[str, str] | None = None, probe: bool = True) -> ServiceView:
    """Find this profile's service, ask its manager about it (when `probe`), and compare it with the CLI's view."""
    env = _env() if env is None else env
    kind = manager_kind(env)
    name = systemd.unit_name(paths.profile) if kind == "systemd" else launchd.label(paths.profile)
    cli_cfg = config_data(paths.config_path)
    view = ServiceView(kind, name, find_installed(paths.profile, env), None, None, paths.config_path,
                       config_validity(paths.config_path), gateway_port(cli_cfg, paths.dev, env))
    svc = view.installed
    if svc is None:
        return view
    if probe:
        view.manager = detect_manager(kind, svc.scope, env)
        if view.manager.available:
            view.state = service_state(svc, view.manager)
    svc_paths = svc.paths()
    view.service_config = svc_paths.config_path
    view.service_validity = config_validity(svc_paths.config_path)
    fix = f"openclaw-sup{_profile_args(paths)} gateway install --force"
    if os.path.abspath(svc_paths.config_path) != os.path.abspath(paths.config_path):
        view.warnings.append({"code": "config-drift", "fix": fix, "message": (
            f"Config (service) differs from Config (cli): the service runs {svc_paths.config_path}, this CLI "
            f"reads {paths.config_path} (profile/state drift)")})
    if svc.port is not None and svc.port != view.cli_port:
        view.warnings.append({"code": "port-drift", "fix": fix, "message": (
            f"Gateway service port does not match current gateway config (service {svc.port}, config "
            f"{view.cli_port})")})
    return view


def _profile_args(paths: ProfilePaths) -> str:
    return f" --profile {paths.profile}" if paths.profile else ""


# ================================================================ planning an install

@dataclass
class ServicePlan:
    """Everything `install` writes: the unit or plist, the secrets file, and the command they run."""

    kind: Kind
    scope: Scope
    name: str
    path: Path
    content: bytes
    env_file: Path
    secrets: dict[str, str]
    argv: list[str]
    port: int
    run_as: str
    paths: ProfilePaths
    state_directory: str | None = None


def _usable_home(home: str) -> bool:
    return bool(home) and home not in ("/", "/nonexistent") and Path(home).is_dir()


def service_paths(cli_paths: ProfilePaths, run_as: str, env: dict[str, str]) -> tuple[ProfilePaths, str | None]:
    """The paths the service will use, and the StateDirectory= name when systemd should create the state dir.

    Same user as this CLI: exactly the CLI's paths. Another user: that user's `~/.openclaw[-<profile>]`, or
    `/var/lib/openclaw[-<profile>]` (created by systemd's StateDirectory=) when it has no usable home;
    an explicit OPENCLAW_STATE_DIR / OPENCLAW_CONFIG_PATH is kept either way.
    """
    if run_as == current_user():
        return cli_paths, None
    home = pwd.getpwnam(run_as).pw_dir
    explicit = {k: env[k] for k in ("OPENCLAW_STATE_DIR", "OPENCLAW_CONFIG_PATH") if env.get(k)}
    if _usable_home(home) or "OPENCLAW_STATE_DIR" in explicit:
        return resolve(cli_paths.profile, False, {"HOME": home, **explicit}), None
    state_name = f"openclaw-{cli_paths.profile}" if cli_paths.profile else "openclaw"
    state_dir = STATE_BASE / state_name
    return resolve(cli_paths.profile, False, {"HOME": home, "OPENCLAW_STATE_DIR": str(state_dir), **explicit}), \
        state_name


def _stop_bounds(paths: ProfilePaths, env: dict[str, str]) -> tuple[int, int]:
    """TimeoutStartSec / TimeoutStopSec that outlast the supervisor's own start timeout and stop ladder."""
    try:
        settings = load_settings(paths, env)
    except (ConfigError, ValueError, OSError):
        return 90, 30
    ladders = [settings.stop, *(w.stop for w in settings.workers)]
    stop_s = max(ladder.bus_timeout_ms + ladder.term_timeout_ms for ladder in ladders) / 1000 + 5
    start_s = max([settings.liveness.start_timeout_ms, *(w.liveness.start_timeout_ms for w in settings.workers)])
    return max(90, math.ceil(start_s / 1000) + 60), max(30, math.ceil(stop_s) + 15)


def _environment(paths: ProfilePaths, entry: str, env: dict[str, str]) -> dict[str, str]:
    bin_dir = str(Path(entry).parent)
    out = {"PATH": f"{bin_dir}:{SYSTEM_PATH}" if bin_dir not in SYSTEM_PATH.split(":") else SYSTEM_PATH,
           "OPENCLAW_STATE_DIR": str(paths.state_dir.absolute()),
           "OPENCLAW_CONFIG_PATH": str(paths.config_path.absolute())}
    out.update({k: env[k] for k in PASSTHROUGH_ENV if env.get(k)})
    return out


def _secrets(env: dict[str, str], token: str | None, password: str | None) -> dict[str, str]:
    found = {k: env[k] for k in SECRET_ENV if env.get(k)}
    if token:
        found["OPENCLAW_GATEWAY_TOKEN"] = token
    if password:
        found["OPENCLAW_GATEWAY_PASSWORD"] = password
    return found


def plan_install(cli_paths: ProfilePaths, kind: Kind, scope: Scope, user: str | None, port: int | None,
                 token: str | None, password: str | None, env: dict[str, str]) -> ServicePlan:
    """Resolve who runs the service, with which paths, port and environment, and render its file."""
    if scope == "system":
        run_as = user or (env.get("SUDO_USER") if os.geteuid() == 0 and env.get("SUDO_USER") else None) \
            or current_user()
    else:
        run_as = current_user()
    try:
        pwd.getpwnam(run_as)
    except KeyError:
        raise ValueError(f"no such user: {run_as}") from None
    paths, state_directory = service_paths(cli_paths, run_as, env)
    resolved_port = port or gateway_port(config_data(paths.config_path), paths.dev, env)
    entry = entry_point()
    argv = [entry, "gateway", "--port", str(resolved_port)]
    if paths.profile:
        argv += ["--profile", paths.profile]
    environment = _environment(paths, entry, env)
    secrets = _secrets(env, token, password)
    timeout_start, timeout_stop = _stop_bounds(paths, env)
    profile_note = f" (profile {paths.profile})" if paths.profile else ""
    if kind == "systemd":
        name = systemd.unit_name(paths.profile)
        env_file = paths.state_dir.absolute() / "service-env" / f"{name.removesuffix('.service')}.env"
        rw: list[Path] = []
        if scope == "system":
            candidates = [paths.state_dir, paths.config_path.parent]
            log_file = (config_data(paths.config_path).get("logging") or {}).get("file")
            if isinstance(log_file, str) and log_file:
                candidates.append(Path(log_file).expanduser().parent)
            for cand in candidates:
                cand = cand.absolute()
                if state_directory and cand == STATE_BASE / state_directory:
                    continue
                if not any(cand.is_relative_to(p) for p in rw):
                    rw.append(cand)
        spec = systemd.UnitSpec(
            scope=scope, description=f"OpenClaw Gateway{profile_note} - openclaw-sup supervisor",
            exec_start=argv, environment=environment, environment_file=env_file,
            kill=shutil.which("kill", path="/usr/bin:/bin") or "/bin/kill",
            user=run_as if scope == "system" else None, state_directory=state_directory,
            read_write_paths=tuple(rw), timeout_start_sec=timeout_start, timeout_stop_sec=timeout_stop)
        content = systemd.render_unit(spec).encode()
        path = systemd.unit_dir(scope, env) / name
    else:
        name = launchd.label(paths.profile)
        env_file = paths.state_dir.absolute() / "service-env" / f"{name}.env"
        program = list(argv)
        if secrets:
            program = ["/bin/sh", "-c", 'set -a; . "$0"; set +a; exec "$@"', str(env_file), *argv]
        home = Path(pwd.getpwnam(run_as).pw_dir) if scope == "system" else Path(env.get("HOME") or Path.home())
        spec_l = launchd.PlistSpec(label=name, program_arguments=program, environment=environment,
                                   log_file=launchd.log_path(paths.profile, home),
                                   user=run_as if scope == "system" else None,
                                   exit_timeout=timeout_stop)
        content = launchd.render_plist(spec_l)
        path = launchd.plist_dir(scope, env) / f"{name}.plist"
    return ServicePlan(kind, scope, name, path, content, env_file, secrets, argv, resolved_port, run_as, paths,
                       state_directory)


# ================================================================ files

def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _env_quote(value: str) -> str:
    """Double-quoted, readable by both systemd's EnvironmentFile= and a POSIX shell's `.` (launchd wrapper)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'"{escaped}"'


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        out[key.strip()] = words[0] if words else ""
    return out


def env_file_content(existing: dict[str, str], secrets: dict[str, str]) -> bytes:
    """Managed secrets updated, keys an operator added by hand kept."""
    merged = {**existing, **secrets}
    lines = ["# Secrets for the openclaw-sup gateway service (mode 0600); read by the unit's EnvironmentFile=.",
             *(f"{k}={_env_quote(v)}" for k, v in merged.items())]
    return ("\n".join(lines) + "\n").encode()


def _chown_to(path: Path, user: str) -> None:
    if os.geteuid() != 0 or user == current_user():
        return
    pw = pwd.getpwnam(user)
    with contextlib.suppress(OSError):
        os.chown(path, pw.pw_uid, pw.pw_gid)


def write_env_file(plan: ServicePlan) -> bool:
    """Write the 0600 secrets file (in a 0700 directory); True when its content changed."""
    created_state = not plan.paths.state_dir.exists()
    content = env_file_content(read_env_file(plan.env_file), plan.secrets)
    try:
        old = plan.env_file.read_bytes()
    except OSError:
        old = None
    ensure_private_dir(plan.paths.state_dir)
    ensure_private_dir(plan.env_file.parent)
    if old != content:
        _atomic_write(plan.env_file, content, 0o600)
    for path in ([plan.paths.state_dir] if created_state else []) + [plan.env_file.parent, plan.env_file]:
        _chown_to(path, plan.run_as)
    return old != content


# ================================================================ manager actions

def _manager_do(mgr: Manager, *args: str) -> tuple[bool, str]:
    res = _run(mgr.systemctl(*args))
    return res.returncode == 0, _first_line(res.stderr) or _first_line(res.stdout)


def _launchctl(mgr: Manager, *args: str) -> tuple[bool, str]:
    res = _run([mgr.binary or "launchctl", *args])
    return res.returncode == 0, _first_line(res.stderr) or _first_line(res.stdout)


def linger_state(user: str) -> str | None:
    """`yes`/`no` from logind, None when logind cannot be asked."""
    if shutil.which("loginctl") is None:
        return None
    res = _run(["loginctl", "show-user", user, "--property=Linger", "--value"], timeout=5)
    value = _first_line(res.stdout)
    return value if res.returncode == 0 and value in ("yes", "no") else None


def _emit(as_json: bool, payload: dict[str, Any], lines: list[str], code: int = 0) -> NoReturn:
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        for line in lines:
            typer.echo(line)
    raise typer.Exit(code)


# ================================================================ commands

def install(
    ctx: typer.Context,
    system: SystemFlag = False,
    user: Annotated[str | None, typer.Option("--user", help="with --system: the account the gateway runs as")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="pin this port (default: config)")]
    = None,
    token: Annotated[str | None, typer.Option("--token", help="gateway token, stored in the 0600 env file")] = None,
    password: Annotated[str | None, typer.Option("--password", help="gateway password, stored in the env file")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing unit that differs")] = False,
    no_start: Annotated[bool, typer.Option("--no-start", help="write and enable, do not start")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Install the gateway as a systemd (Linux) or launchd (macOS) service for this profile."""
    env = _env()
    if env.get("OPENCLAW_SUPERVISOR_MODE", "").strip().lower() == "external":
        fail("OPENCLAW_SUPERVISOR_MODE=external: the gateway is supervised elsewhere; not installing a service")
    if user and not system:
        fail("--user NAME names the account of a system unit; add --system")
    scope: Scope = "system" if system else "user"
    kind = manager_kind(env)
    try:
        plan = plan_install(profile_paths(ctx), kind, scope, user, port, token, password, env)
    except ValueError as exc:
        fail(str(exc))
    messages: list[str] = []
    validity = config_validity(plan.paths.config_path)
    if scope == "system" and kind == "systemd" and any(
            p.absolute().is_relative_to("/tmp") for p in (plan.paths.state_dir, plan.paths.config_path)):
        messages.append("Warning: the state dir or config is under /tmp, which the unit's PrivateTmp=yes hides from "
                        "the service; move it (OPENCLAW_STATE_DIR) before starting the service")
    if validity.startswith("invalid"):
        messages.append(f"Warning: {plan.paths.config_path} is {validity}; the service will exit 78 and not be "
                        "restarted until it is fixed (openclaw-sup doctor)")
    try:
        old = plan.path.read_bytes()
    except OSError:
        old = None
    result = "created" if old is None else "unchanged" if old == plan.content else "updated" if force else "differs"
    payload: dict[str, Any] = {"ok": result != "differs", "result": result, "manager": kind, "scope": scope,
                               "unit": plan.name, "path": str(plan.path), "envFile": str(plan.env_file),
                               "execStart": plan.argv, "port": plan.port, "user": plan.run_as,
                               "configPath": str(plan.paths.config_path), "started": False}
    if result == "differs":
        text = (f"{plan.path} exists and differs from what this install would write; left alone. "
                "Pass --force to overwrite it.")
        payload["messages"] = [*messages, text]
        _emit(as_json, payload, [*messages, text], 1)
    env_changed = write_env_file(plan)
    if result != "unchanged":
        _atomic_write(plan.path, plan.content, 0o644)
    what = "unit" if kind == "systemd" else "plist"
    verb = {"created": "Installed", "updated": "Updated", "unchanged": "Already installed"}[result]
    messages.append(f"{verb} {plan.name} ({kind} {scope} {what}): {plan.path}")
    messages.append(f"  runs: {manual_command(plan.argv)}")
    if plan.secrets:
        messages.append(f"  secrets: {', '.join(sorted(plan.secrets))} in {plan.env_file} (0600)")
    mgr = detect_manager(kind, scope, env)
    payload["serviceManager"] = {"available": mgr.available, "detail": mgr.detail or None}
    code = 0
    if not mgr.available:
        messages.append(no_manager_text(mgr, plan.argv))
        if kind == "systemd":
            flag = "--user " if scope == "user" else ""
            messages.append(f"Once systemd runs: systemctl {flag}daemon-reload && "
                            f"systemctl {flag}enable --now {plan.name}")
    elif kind == "systemd":
        steps = [("daemon-reload",), ("enable", plan.name)]
        if not no_start:
            changed = result != "unchanged" or env_changed
            steps.append(("restart" if changed else "start", plan.name))
        for step in steps:
            ok, detail = _manager_do(mgr, *step)
            if not ok:
                messages.append(f"systemctl {' '.join(step)} failed: {detail}")
                code = 1
                break
        else:
            payload["started"] = not no_start
            messages.append(f"Enabled{'' if no_start else ' and started'} {plan.name}.")
    else:
        target = f"{mgr.launchd_domain}/{plan.name}"
        _launchctl(mgr, "bootout", target)
        ok, detail = _launchctl(mgr, "bootstrap", mgr.launchd_domain, str(plan.path))
        if ok:
            payload["started"] = True
            messages.append(f"Loaded {plan.name} into launchd ({mgr.launchd_domain}).")
        else:
            messages.append(f"launchctl bootstrap failed: {detail}")
            code = 1
    if kind == "systemd" and scope == "user":
        linger = linger_state(plan.run_as)
        payload["linger"] = linger
        if linger != "yes":
            messages.append(f"To keep the gateway running after you log out: sudo loginctl enable-linger "
                            f"{plan.run_as}")
    payload["ok"] = code == 0
    payload["messages"] = messages
    _emit(as_json, payload, messages, code)


def _scope_for(profile: str | None, system: bool, env: dict[str, str]) -> tuple[InstalledService | None, Scope]:
    if system:
        return find_installed(profile, env, "system"), "system"
    found = find_installed(profile, env)
    return found, found.scope if found else "user"


def uninstall(ctx: typer.Context, system: SystemFlag = False, as_json: JsonFlag = False) -> None:
    """Stop and disable the service, then remove its unit (or plist) and its secrets file."""
    env = _env()
    paths = profile_paths(ctx)
    svc, scope = _scope_for(paths.profile, system, env)
    kind = manager_kind(env)
    if svc is None:
        name = systemd.unit_name(paths.profile) if kind == "systemd" else launchd.label(paths.profile)
        _emit(as_json, {"ok": True, "removed": [], "unit": name, "installed": False},
              [f"Gateway service not installed ({name}); nothing to remove."])
    mgr = detect_manager(kind, scope, env)
    messages: list[str] = []
    if mgr.available:
        if kind == "systemd":
            ok, detail = _manager_do(mgr, "disable", "--now", svc.name)
            messages.append(f"Stopped and disabled {svc.name}." if ok else f"systemctl disable --now: {detail}")
        else:
            _launchctl(mgr, "bootout", f"{mgr.launchd_domain}/{svc.name}")
            messages.append(f"Unloaded {svc.name}.")
    else:
        messages.append(f"{NO_MANAGER} ({mgr.detail}); removing the files only.")
    removed = []
    env_files = svc.env_files or [svc.paths().state_dir / "service-env" / f"{svc.path.stem}.env"]
    for path in [svc.path, *env_files]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path))
    if mgr.available and kind == "systemd":
        _manager_do(mgr, "daemon-reload")
    messages += [f"Removed {p}" for p in removed]
    _emit(as_json, {"ok": True, "removed": removed, "unit": svc.name, "installed": True,
                    "serviceManager": {"available": mgr.available, "detail": mgr.detail or None}}, messages)


def _lifecycle(ctx: typer.Context, action: str, system: bool, as_json: bool) -> None:
    env = _env()
    paths = profile_paths(ctx)
    kind = manager_kind(env)
    svc, scope = _scope_for(paths.profile, system, env)
    name = systemd.unit_name(paths.profile) if kind == "systemd" else launchd.label(paths.profile)
    manual = [entry_point(), "gateway", *(["--profile", paths.profile] if paths.profile else [])]
    if svc is None:
        if action == "stop":
            _emit(as_json, {"ok": True, "action": action, "unit": name, "installed": False},
                  [f"Gateway service not installed ({name}); nothing to stop."])
        text = (f"Gateway service not installed ({name}). Install it: openclaw-sup{_profile_args(paths)} gateway "
                f"install\nOr run the gateway in the foreground: {manual_command(manual)}")
        _emit(as_json, {"ok": False, "action": action, "unit": name, "installed": False, "error": text},
              [text], 1)
    mgr = detect_manager(kind, scope, env)
    if not mgr.available:
        text = no_manager_text(mgr, svc.gateway_argv or manual)
        _emit(as_json, {"ok": False, "action": action, "unit": svc.name, "installed": True,
                        "error": text, "serviceManager": {"available": False, "detail": mgr.detail}}, [text], 1)
    if kind == "systemd":
        ok, detail = _manager_do(mgr, action, svc.name)
    else:
        target = f"{mgr.launchd_domain}/{svc.name}"
        if action == "stop":
            ok, detail = _launchctl(mgr, "bootout", target)
        elif action == "start":
            _launchctl(mgr, "bootstrap", mgr.launchd_domain, str(svc.path))
            ok, detail = _launchctl(mgr, "kickstart", target)
        else:
            ok, detail = _launchctl(mgr, "kickstart", "-k", target)
    past = {"start": "Started", "stop": "Stopped", "restart": "Restarted"}[action]
    text = f"{past} {svc.name}." if ok else f"{action} {svc.name} failed: {detail}"
    _emit(as_json, {"ok": ok, "action": action, "unit": svc.name, "installed": True,
                    **({} if ok else {"error": detail})}, [text], 0 if ok else 1)


def start(ctx: typer.Context, system: SystemFlag = False, as_json: JsonFlag = False) -> None:
    """Start the installed gateway service."""
    _lifecycle(ctx, "start", system, as_json)


def stop(ctx: typer.Context, system: SystemFlag = False, as_json: JsonFlag = False) -> None:
    """Stop the gateway service (a service that is not installed is already stopped)."""
    _lifecycle(ctx, "stop", system, as_json)


def restart(ctx: typer.Context, system: SystemFlag = False, as_json: JsonFlag = False) -> None:
    """Restart the gateway service through its manager (never emulated with stop + start)."""
    _lifecycle(ctx, "restart", system, as_json)
