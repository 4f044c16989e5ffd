"""`openclaw-sup doctor [--fix] [--json] [--non-interactive] [--yes]`: find what stops a gateway, repair the safe part.

Each finding is `{checkId, severity, message, path?, fixHint?, fixed?}` and prints as upstream's
`  [warning] core/doctor/gateway-config gateway.mode - gateway.mode is unset; gateway start will be blocked.`

The state databases are checked as the gateway opens them (upstream's schema version and owner, no legacy JSON
state of an older release left for `openclaw doctor --fix` to import) and for their modes.

`--fix` repairs only what cannot lose anything: file modes (config 0600, state and run dirs 0700, service
secrets 0600, state databases and their `-wal`/`-shm` 0600), a missing state dir, a missing gateway token in
token mode (generated, never over a SecretRef), stale lock and socket files (only while no gateway holds the
lock). `gateway.mode=local` is written only when
it is unset, no `gateway.remote.url` says this is a client config, and the operator agrees: at the prompt of
an interactive run, or with `--yes`; `--non-interactive` never writes it. Services, linger, ports, channel
credentials and browsers are reported with the command that fixes them.

Exit status: 0 with `--json`; otherwise 1 when an error-severity finding remains.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer

from openclaw_sup.cli.common import profile_paths
from openclaw_sup.cli.service import (
    current_user,
    entry_point,
    find_installed,
    gateway_port,
    inspect_service,
    linger_state,
    manager_kind,
)
from openclaw_sup.config.browser import browser_profiles, clear_locks, find_browser, stale_locks
from openclaw_sup.config.document import Config, read_config
from openclaw_sup.config.loader import ConfigError
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.config.plan import DEFAULT_ACCOUNT, channel_accounts
from openclaw_sup.config.store import set_path, write_config_atomic
from openclaw_sup.ipc.control import ControlError, call

SEVERITIES = ("error", "warning", "info")
Fix = Callable[[], str]


class NotConfirmed(Exception):
    """A repair that needs the operator's yes did not get it."""


@dataclass
class Finding:
    check_id: str
    severity: str
    message: str
    path: str | None = None
    fix_hint: str | None = None
    fix: Fix | None = field(default=None, repr=False)
    fixed: bool = False
    action: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checkId": self.check_id, "severity": self.severity, "message": self.message}
        if self.path:
            out["path"] = self.path
        if self.fix_hint:
            out["fixHint"] = self.fix_hint
        if self.fix is not None or self.fixed:
            out["fixed"] = self.fixed
        if self.action:
            out["action"] = self.action
        return out

    def text(self) -> list[str]:
        where = f" {self.path}" if self.path else ""
        lines = [f"  [{self.severity}] {self.check_id}{where} - {self.message}"]
        if self.fixed:
            lines.append(f"    fixed: {self.action}")
        elif self.fix_hint:
            lines.append(f"    fix: {self.fix_hint}")
        return lines


@dataclass
class Doctor:
    """One run: what was read once (paths, config, the live gateway) and the findings so far."""

    paths: ProfilePaths
    env: dict[str, str]
    fix: bool
    may_set_mode: Callable[[], bool]
    config: Config | None = None
    config_error: str | None = None
    gateway: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def cfg(self) -> dict[str, Any]:
        return self.config.data if self.config is not None else {}

    @property
    def cli(self) -> str:
        return "openclaw-sup" + (f" --profile {self.paths.profile}" if self.paths.profile else "")

    def add(self, check_id: str, severity: str, message: str, path: str | None = None,
            fix_hint: str | None = None, fix: Fix | None = None) -> None:
        finding = Finding(f"core/doctor/{check_id}", severity, message, path, fix_hint, fix)
        if self.fix and fix is not None:
            try:
                finding.action = fix()
                finding.fixed = True
            except NotConfirmed as exc:
                finding.fix_hint = f"{fix_hint or ''} (left unchanged: {exc})".strip()
            except (OSError, ConfigError, ValueError) as exc:
                finding.fix_hint = f"{fix_hint or ''} (automatic fix failed: {exc})".strip()
        self.findings.append(finding)

    def load(self) -> None:
        try:
            self.config = read_config(self.paths, self.env)
        except ConfigError as exc:
            self.config_error = str(exc)
        try:
            self.gateway = call(self.paths.control_socket, "status", timeout=2)
        except (ControlError, ValueError):
            self.gateway = None

    def edit_config(self, segs: list[str], value: Any) -> None:
        """Re-read the file (an earlier fix may have written it) and write one value atomically."""
        current = read_config(self.paths, self.env)
        write_config_atomic(self.paths.config_path, set_path(current.raw, segs, value), self.env)
        self.config = read_config(self.paths, self.env)

    # ------------------------------------------------------------------ checks

    def check_config(self) -> None:
        path = self.paths.config_path
        if self.config_error is not None:
            first = next((line for line in self.config_error.splitlines() if line.strip()), self.config_error)
            self.add("config-file", "error", f"config cannot be read: {first}", str(path),
                     f"fix the file by hand, then check it with {self.cli} config validate")
            return
        assert self.config is not None
        if not self.config.exists:
            self.add("config-file", "info", f"no config file at {path}; defaults apply", str(path),
                     f"{self.cli} config set gateway.mode local")
            return
        for issue in self.config.report.errors:
            self.add("config-schema", "error", issue.message, issue.path or "<root>",
                     f"edit {path} or use {self.cli} config set|unset")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            def chmod_config() -> str:
                path.chmod(0o600)
                return f"chmod 600 {path}"

            self.add("config-permissions", "warning",
                     f"config file is readable by others (mode {mode:04o}); it holds secrets", str(path),
                     f"chmod 600 {path}", chmod_config)

    def check_state_dir(self) -> None:
        state = self.paths.state_dir
        if not state.exists():
            def make_state() -> str:
                state.mkdir(parents=True, mode=0o700)
                return f"mkdir -m 700 {state}"

            self.add("state-dir", "info", f"state directory {state} does not exist yet", str(state),
                     f"mkdir -m 700 {state}", make_state)
            return
        agents = state / "agents"
        for directory in (state, self.paths.run_dir, state / "service-env", agents, *sorted(agents.glob("*")),
                          *sorted(agents.glob("*/agent"))):
            if not directory.is_dir():
                continue
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & 0o077:
                self.add("state-dir", "warning", f"{directory} is open to others (mode {mode:04o}); it should be 0700",
                         str(directory), f"chmod 700 {directory}", _chmod(directory, 0o700))
        for env_file in sorted((state / "service-env").glob("*.env")):
            mode = stat.S_IMODE(env_file.stat().st_mode)
            if mode & 0o077:
                self.add("state-dir", "warning", f"service secrets file is readable by others (mode {mode:04o})",
                         str(env_file), f"chmod 600 {env_file}", _chmod(env_file, 0o600))
        for db in sorted({*state.glob("state/*.sqlite*"), *agents.glob("*/agent/*.sqlite*")}):
            mode = stat.S_IMODE(db.stat().st_mode)
            if db.is_file() and mode & 0o077:
                self.add("state-dir", "warning", f"database file is readable by others (mode {mode:04o})",
                         str(db), f"chmod 600 {db}", _chmod(db, 0o600))

    def check_state_files(self) -> None:
        """Upstream's databases usable as they are (version, owner), and no legacy state of an older release left
        unimported (their modes: check_state_dir)."""
        from openclaw_sup.config import legacy_state, statedb

        state = self.paths.state_dir
        databases = [(statedb.state_db_path(state), "global", None)]
        databases += [(p, "agent", p.parent.parent.name) for p in sorted(state.glob(f"agents/*/agent/"
                                                                                    f"{statedb.AGENT_DB_NAME}"))]
        for path, role, agent in databases:
            reason = statedb.inspect(path, role, agent)
            if reason:
                self.add("state-db", "error", reason, str(path), "openclaw doctor --fix")
        legacy = legacy_state.problem(state)
        if legacy:
            self.add("state-legacy", "error", legacy, str(state), "openclaw doctor --fix")

    def check_gateway_mode(self) -> None:
        gateway = self.cfg.get("gateway") if isinstance(self.cfg.get("gateway"), dict) else {}
        mode = gateway.get("mode")
        if mode == "local":
            return
        if mode == "remote":
            self.add("gateway-config", "info", "gateway.mode is remote; this host's gateway will not start",
                     "gateway.mode", f"{self.cli} config set gateway.mode local (to run a gateway here)")
            return
        remote = gateway.get("remote") if isinstance(gateway.get("remote"), dict) else {}
        hint = f"{self.cli} config set gateway.mode local"
        fix: Fix | None = None
        if self.config_error is None and not remote.get("url"):
            def set_local() -> str:
                if not self.may_set_mode():
                    raise NotConfirmed("needs confirmation: rerun interactively or with --yes")
                self.edit_config(["gateway", "mode"], "local")
                return f"set gateway.mode=local in {self.paths.config_path}"

            fix = set_local
        self.add("gateway-config", "warning", "gateway.mode is unset; gateway start will be blocked.", "gateway.mode",
                 hint, fix)

    def check_gateway_auth(self) -> None:
        gateway = self.cfg.get("gateway") if isinstance(self.cfg.get("gateway"), dict) else {}
        if gateway.get("mode") == "remote" or self.config_error is not None:
            return
        auth = gateway.get("auth") if isinstance(gateway.get("auth"), dict) else {}
        mode = auth.get("mode")
        token = auth.get("token") or self.env.get("OPENCLAW_GATEWAY_TOKEN")
        password = auth.get("password") or self.env.get("OPENCLAW_GATEWAY_PASSWORD")
        if mode is None and auth.get("token") and auth.get("password"):
            self.add("gateway-auth", "error", "gateway.auth.token and gateway.auth.password are both set and "
                     "gateway.auth.mode is unset; the gateway refuses to start", "gateway.auth.mode",
                     f"{self.cli} config set gateway.auth.mode token (or password)")
            return
        if mode == "password" and not password:
            self.add("gateway-auth", "error", "gateway.auth.mode is password but no password is set",
                     "gateway.auth.password", f"{self.cli} config set gateway.auth.password <password>")
            return
        if mode in ("token", None) and not token and not (mode is None and password):
            def generate() -> str:
                self.edit_config(["gateway", "auth", "token"], secrets.token_urlsafe(32))
                return f"generated gateway.auth.token in {self.paths.config_path}"

            writable = self.config is not None and self.config.valid
            self.add("gateway-auth", "warning", "token auth without a token: the gateway would generate a runtime-"
                     "only token that no client knows", "gateway.auth.token",
                     f"{self.cli} doctor --fix (generates one)" if writable else
                     f"{self.cli} config set gateway.auth.token <token>", generate if writable else None)

    def check_service(self) -> None:
        view = inspect_service(self.paths, self.env)
        svc = view.installed
        if svc is None:
            self.add("service", "info", f"gateway service not installed ({view.name})", None,
                     f"{self.cli} gateway install")
            return
        other = find_installed(self.paths.profile, self.env, "system" if svc.scope == "user" else "user")
        if other is not None and other.path != svc.path:
            self.add("service", "warning", f"System-level OpenClaw gateway service detected ({other.path}) next to "
                     f"the user unit {svc.path}; two services would fight over one port", str(other.path),
                     f"remove one: {self.cli} gateway uninstall [--system]")
        if view.manager is not None and not view.manager.available:
            self.add("service", "warning", f"{svc.name} is installed but no supported service manager detected "
                     f"({view.manager.detail})", str(svc.path),
                     f"run the gateway in the foreground: {' '.join(svc.gateway_argv)}")
        elif view.state is not None and not view.active:
            last = f", last exit {view.state['lastExit']}" if view.state.get("lastExit") not in (None, "0") else ""
            self.add("service", "warning", f"{svc.name} is installed but not running "
                     f"({view.state.get('active')}{last})", str(svc.path), f"{self.cli} gateway start")
        if view.service_validity and view.service_validity.startswith("invalid"):
            self.add("service", "error", f"the service's config {view.service_config} is {view.service_validity}",
                     str(view.service_config), f"{self.cli} config validate")
        for warning in view.warnings:
            self.add("service-drift", "warning", warning["message"], str(svc.path), warning["fix"])
        if svc.kind == "systemd" and svc.scope == "user":
            user = current_user()
            linger = linger_state(user)
            if linger == "no":
                self.add("linger", "warning", f"systemd linger is off for {user}: the user service stops at logout",
                         None, f"sudo loginctl enable-linger {user}")
            elif linger is None:
                self.add("linger", "info", "linger state unknown (logind not reachable); a user service may stop "
                         "at logout", None, f"sudo loginctl enable-linger {user}")

    def check_port(self) -> None:
        port = gateway_port(self.cfg, self.paths.dev, self.env)
        ours = int(self.gateway["supervisor"]["pid"]) if self.gateway else None
        holders = _listeners(port)
        if holders is None:
            if ours is None and _port_busy(port):
                self.add("port", "error", f"port {port} is in use by a process this user cannot see",
                         "gateway.port", "free the port or set another gateway.port")
            return
        for pid in sorted(holders, key=lambda p: (p is None, p or 0)):
            if pid is not None and pid == ours:
                self.add("port", "info", f"port {port} is held by this profile's gateway (pid {pid})", "gateway.port")
                continue
            severity = "warning" if ours is not None else "error"
            if pid is None:
                self.add("port", severity, f"port {port} is in use by a process of another user", "gateway.port",
                         "free the port or set another gateway.port")
                continue
            name, cmdline = _describe(pid)
            if "openclaw" in cmdline and "gateway" in cmdline:
                self.add("port", severity, f"port {port} is held by another gateway (pid {pid}: {cmdline})",
                         "gateway.port", "stop that gateway, or give this profile its own gateway.port (at least "
                         "100 ports apart)")
            else:
                self.add("port", severity, f"port {port} is in use by {name} (pid {pid})", "gateway.port",
                         f"stop {name} or set another gateway.port")

    def check_locks(self) -> None:
        lock = self.paths.lock_file
        held_by: int | None = None
        if lock.exists():
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                self.add("stale-lock", "warning", f"cannot open {lock}: {exc.strerror}", str(lock))
                return
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    free = True
                except BlockingIOError:
                    free = False
                owner = _lock_owner(lock)
                if free:
                    self._stale_lock(lock, owner)
                else:
                    held_by = owner
                    self._held_lock(lock, owner)
            finally:
                os.close(fd)
        if self.gateway is not None or held_by is not None:
            return
        for sock in (self.paths.run_dir / "ctl.sock", self.paths.run_dir / "bus.sock"):
            if sock.exists() or sock.is_symlink():
                def remove(path: Path = sock) -> str:
                    if _lock_held(self.paths.lock_file):
                        raise ValueError("a gateway took the lock meanwhile; left in place")
                    path.unlink(missing_ok=True)
                    return f"removed {path}"

                self.add("stale-socket", "warning", f"stale socket {sock.name}: no gateway is running for this "
                         "profile", str(sock), f"rm {sock}", remove)

    def _stale_lock(self, lock: Path, owner: int | None) -> None:
        """Called while this process holds the flock, so no gateway can take the file as it is removed."""
        if owner is None:
            return
        if psutil.pid_exists(owner):
            name, _ = _describe(owner)
            why = f"pid {owner} ({name}) is alive but does not hold it"
        else:
            why = f"pid {owner} is not running"

        def remove() -> str:
            lock.unlink(missing_ok=True)
            return f"removed {lock}"

        self.add("stale-lock", "warning", f"stale gateway lock: {why}", str(lock), f"rm {lock}", remove)

    def _held_lock(self, lock: Path, owner: int | None) -> None:
        if owner is None or not psutil.pid_exists(owner):
            return
        name, cmdline = _describe(owner)
        if "openclaw-sup" not in cmdline:
            self.add("stale-lock", "warning", f"{lock.name} is held by pid {owner} ({name}), not an openclaw-sup "
                     "gateway", str(lock), f"check pid {owner}")
        elif self.gateway is None:
            self.add("stale-lock", "warning", f"gateway pid {owner} holds the lock but does not answer on "
                     f"{self.paths.control_socket}", str(lock),
                     f"{self.cli} gateway restart, or kill {owner} if it is stuck")

    def check_browser(self) -> None:
        browser = self.cfg.get("browser")
        if not isinstance(browser, dict) or browser.get("enabled") is False:
            return
        explicit = [("browser.executablePath", browser.get("executablePath"))]
        profiles = browser.get("profiles") if isinstance(browser.get("profiles"), dict) else {}
        explicit += [(f"browser.profiles.{n}.executablePath", p.get("executablePath"))
                     for n, p in profiles.items() if isinstance(p, dict)]
        for key, value in explicit:
            if isinstance(value, str) and value:
                exe = Path(value).expanduser()
                if not (exe.is_file() and os.access(exe, os.X_OK)):
                    self.add("browser", "error", f"{key.split('.', 1)[0]}.executablePath not found: {exe}", key,
                             f"install the browser or fix {key}")
        if browser.get("executablePath") or browser.get("attachOnly") or browser.get("cdpUrl"):
            return
        found = find_browser(self.env)
        if found is None:
            self.add("browser", "warning", "no Chromium-based browser found (looked for Chrome, Brave, Edge, "
                     "Chromium, Chrome Canary, the Playwright cache)", "browser.executablePath",
                     f"install chromium, or {self.cli} config set browser.executablePath /path/to/browser")
        else:
            self.add("browser", "info", f"browser: {found[0]} at {found[1]}", "browser.executablePath")

    def check_browser_profiles(self) -> None:
        """Stale Chromium Singleton* locks (`--fix` clears them) and, while the gateway runs, CDP reachability."""
        browser = self.cfg.get("browser")
        if not isinstance(browser, dict) or browser.get("enabled") is False:
            return
        port = (self.gateway or {}).get("supervisor", {}).get("ports", {}).get("gateway") or gateway_port(
            self.cfg, self.paths.dev, self.env)
        for name, prof in browser_profiles(browser, int(port), self.paths.state_dir, self.env).items():
            stale = stale_locks(prof.user_data_dir) if prof.managed else []
            if stale:
                self.add("browser", "warning", f'browser profile "{name}": stale Chromium lock files '
                         f"{', '.join(p.name for p in stale)} (their owner is gone)", str(prof.user_data_dir),
                         f"{self.cli} doctor --fix", fix=lambda s=stale: "removed " + ", ".join(clear_locks(s)))
            if self.gateway is None or not prof.cdp_url:
                continue
            if _cdp_reachable(prof.cdp_url):
                self.add("browser", "info", f'browser profile "{name}": CDP reachable at {prof.cdp_url}')
            elif not prof.managed:
                self.add("browser", "warning", f'Remote CDP for profile "{name}" is not reachable at {prof.cdp_url}',
                         f"browser.profiles.{name}.cdpUrl", "start that browser or fix its cdpUrl")
            else:
                self.add("browser", "info", f'browser profile "{name}": not running (CDP {prof.cdp_url} does not '
                         "answer)", fix_hint=f"{self.cli} browser start --browser-profile {name}")

    def check_channels(self) -> None:
        if self.env.get("OPENCLAW_SKIP_CHANNELS", "").strip().lower() in ("1", "true", "yes", "on"):
            return
        channels = self.cfg.get("channels") if isinstance(self.cfg.get("channels"), dict) else {}
        for acct in channel_accounts(self.cfg).values():
            ch, acct_id = acct["channel"], acct["accountId"]
            has_accounts = isinstance((channels.get(ch) or {}).get("accounts"), dict)
            base = f"channels.{ch}.accounts.{acct_id}" if has_accounts else f"channels.{ch}"
            if ch == "telegram":
                token_file = acct.get("tokenFile")
                if token_file and not Path(str(token_file)).expanduser().is_file():
                    self.add("channels", "error", f"telegram account {acct_id}: tokenFile {token_file} not found",
                             f"{base}.tokenFile", "create the file or fix the path")
                elif not (acct.get("botToken") or token_file or
                          (acct_id == DEFAULT_ACCOUNT and self.env.get("TELEGRAM_BOT_TOKEN"))):
                    self.add("channels", "error", f"telegram account {acct_id} has no bot token (botToken, tokenFile "
                             "or TELEGRAM_BOT_TOKEN)", f"{base}.botToken",
                             f"{self.cli} config set {base}.botToken <token>")
            elif ch == "irc":
                missing = [k for k in ("host", "nick") if not acct.get(k)]
                if missing:
                    self.add("channels", "error", f"irc account {acct_id} needs {' and '.join(missing)}",
                             f"{base}.{missing[0]}", f"{self.cli} config set {base}.{missing[0]} <value>")

    def run(self) -> None:
        self.load()
        self.check_config()
        self.check_state_dir()
        self.check_state_files()
        self.check_gateway_mode()
        self.check_gateway_auth()
        self.check_locks()
        self.check_port()
        self.check_service()
        self.check_browser()
        self.check_browser_profiles()
        self.check_channels()


# ================================================================ helpers

def _chmod(path: Path, mode: int) -> Fix:
    def fix() -> str:
        path.chmod(mode)
        return f"chmod {mode:o} {path}"

    return fix


def _lock_owner(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def _lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _describe(pid: int) -> tuple[str, str]:
    """A process's name and command line ('?' when it is gone or not ours to read)."""
    try:
        proc = psutil.Process(pid)
        return proc.name(), " ".join(proc.cmdline()) or proc.name()
    except (psutil.Error, OSError):
        return "?", "?"


def _listeners(port: int) -> set[int | None] | None:
    """Pids listening on a TCP port (None for sockets of other users); None when the table is not readable."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    return {c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}


def _cdp_reachable(cdp_url: str, timeout: float = 1.0) -> bool:
    """`/json/version` answers with a webSocketDebuggerUrl (urllib: the CLI stays import-light)."""
    from urllib.parse import urlsplit
    from urllib.request import urlopen

    u = urlsplit(cdp_url)
    base = f"{ {'ws': 'http', 'wss': 'https'}.get(u.scheme, u.scheme)}://{u.netloc}"
    try:
        with urlopen(f"{base}/json/version", timeout=timeout) as resp:
            return "webSocketDebuggerUrl" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# ================================================================ command

def doctor(
    ctx: typer.Context,
    fix: Annotated[bool, typer.Option("--fix", "--repair", help="repair what is safe to repair")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print {ok, findings} as JSON (exit 0)")] = False,
    non_interactive: Annotated[bool, typer.Option("--non-interactive", help="never prompt; safe repairs only")]
    = False,
    yes: Annotated[bool, typer.Option("--yes", help="accept the repairs that would prompt")] = False,
) -> None:
    """Check config, state, service, port, locks, browser and channel credentials; `--fix` repairs the safe part."""
    paths = profile_paths(ctx)
    interactive = not non_interactive and not as_json and sys.stdin.isatty()

    def may_set_mode() -> bool:
        if non_interactive:
            return False
        if yes:
            return True
        return interactive and typer.confirm(f"Set gateway.mode=local in {paths.config_path}?", default=False)

    doc = Doctor(paths, dict(os.environ), fix, may_set_mode)
    doc.run()
    remaining_errors = [f for f in doc.findings if f.severity == "error" and not f.fixed]
    if as_json:
        typer.echo(json.dumps({"ok": not remaining_errors, "findings": [f.to_json() for f in doc.findings]},
                              indent=2))
        return
    label = f"profile {paths.profile}" if paths.profile else "default profile"
    typer.echo(f"openclaw-sup doctor: {paths.config_path} ({label}, {manager_kind()} service, "
               f"{entry_point()})")
    order = {s: i for i, s in enumerate(SEVERITIES)}
    for finding in sorted(doc.findings, key=lambda f: order.get(f.severity, 9)):
        for line in finding.text():
            typer.echo(line)
    counts = {s: sum(1 for f in doc.findings if f.severity == s and not f.fixed) for s in SEVERITIES}
    fixed = sum(1 for f in doc.findings if f.fixed)
    summary = f"{counts['error']} error(s), {counts['warning']} warning(s)"
    if fixed:
        summary += f", {fixed} fixed"
    fixable = sum(1 for f in doc.findings if f.fix is not None and not f.fixed)
    if fixable and not fix:
        summary += f"; {fixable} can be repaired with {doc.cli} doctor --fix"
    typer.echo(summary if doc.findings else "No problems found.")
    if remaining_errors:
        raise typer.Exit(1)
