"""The managers the recovery bench drives: openclaw-sup, circus (defaults and check_delay 0.1), supervisord.

Each one supervises five equivalent workers w0..w4 that report to the bench listener. The peers run from
their own venvs in a cache dir outside the repo, installed on first use, so the bench needs nothing but
PyPI to compare against them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from bench_common import SERVING, Listener, free_port, kill_leftovers, timeline_env

from openclaw_sup.ipc.control import ControlError, call

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUR_BIN = Path(sys.executable).parent / "openclaw-sup"
WORKER_PY = BENCH_DIR / "worker.py"
WORKERS = ("w0", "w1", "w2", "w3", "w4")

PEER_PACKAGES = {"circus": ("circus==0.19.0", "circusd"), "supervisor": ("supervisor==4.3.0", "supervisord")}


class Unavailable(Exception):
    """A manager cannot be measured here (install or start failed); its column is printed as skipped."""


def _make_venv(venv: Path) -> None:
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if r.returncode:
            raise Unavailable(f"python -m venv {venv} failed: {_last_line(r.stderr)}")


def _pip_install(bindir: Path, what: str, *args: str) -> None:
    """`pip install -q ARGS` with the venv's own pip; Unavailable (with pip's last line) when it fails."""
    cmd = [str(bindir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pip install of {what} timed out") from None
    if r.returncode:
        raise Unavailable(f"pip install of {what} failed: {_last_line(r.stderr or r.stdout)}")


def ensure_peer(cache: Path, dist: str) -> Path:
    """The bin dir of a venv holding the pinned peer, created with `python -m venv` + pip only if missing."""
    requirement, probe = PEER_PACKAGES[dist]
    venv = cache / dist
    bindir = venv / "bin"
    marker = venv / ".bench-installed"
    if marker.exists() and marker.read_text().strip() == requirement and (bindir / probe).exists():
        return bindir
    _make_venv(venv)
    print(f"[bench] installing {requirement} into {venv}", file=sys.stderr, flush=True)
    _pip_install(bindir, requirement, requirement)
    if not (bindir / probe).exists():
        raise Unavailable(f"pip install of {requirement} did not provide {probe}")
    marker.write_text(requirement + "\n")
    return bindir


def _source_files(ref: str | None) -> dict[str, bytes]:
    """pyproject.toml and every package dir it maps, from the working tree (ref None) or from git ref `ref`."""
    def read(path: str) -> bytes:
        if ref is None:
            return (REPO / path).read_bytes()
        return subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:{path}"], capture_output=True,
                              check=True).stdout

    meta = tomllib.loads(read("pyproject.toml").decode())
    dirs = sorted(set(meta["tool"]["setuptools"]["package-dir"].values()))
    if ref is None:
        names = [str(f.relative_to(REPO)) for d in dirs for f in sorted((REPO / d).rglob("*"))
                 if f.is_file() and "__pycache__" not in f.parts]
    else:
        out = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", ref, "--", *dirs],
                             capture_output=True, text=True, check=True).stdout
        names = out.split()
    return {"pyproject.toml": read("pyproject.toml"), **{n: read(n) for n in names}}


def _install_copy(venv: Path, files: dict[str, bytes], what: str, *pip_args: str) -> Path:
    """`pip install --no-deps` of `files` (copied to a temp dir first, so the build writes nothing into the
    repo) into `venv`, unless the same files are already installed there; returns its bin dir."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    bindir = venv / "bin"
    marker = venv / ".bench-installed"
    if marker.exists() and marker.read_text().strip() == digest.hexdigest() and (bindir / "openclaw-sup").exists():
        return bindir
    _make_venv(venv)
    with tempfile.TemporaryDirectory(prefix="ocsb-src-") as src:
        for name, data in files.items():
            dest = Path(src) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        _pip_install(bindir, what, "--no-deps", "--force-reinstall", *pip_args, src)
    if not (bindir / "openclaw-sup").exists():
        raise Unavailable(f"pip install of {what} did not provide openclaw-sup")
    marker.write_text(digest.hexdigest() + "\n")
    return bindir


def ensure_regular_install(cache: Path) -> Path:
    """openclaw-sup installed the way users get it (`pip install .`, not `-e`), for a fair `status` row.

    The project's dev venv is an editable install, whose .pth import hook costs every Python start there
    more than a dozen ms; the peers are regular installs. `--no-deps`: the `status` command imports nothing
    outside the standard library.
    """
    return _install_copy(cache / "ours-install", _source_files(None), "the project")


def ensure_install(cache: Path, ref: str | None) -> Path:
    """A regular install (not `-e`) of the working tree (ref None) or of git ref `ref`, able to run the gateway,
    so two builds can be measured side by side in one run on equal terms (neither has the editable import hook).

    Its dependencies are the dev venv's: a .pth line puts the dev venv's site-packages on sys.path (its own .pth
    files, the editable hook among them, are not run from there), so nothing is downloaded and both builds run
    the same libraries.
    """
    if ref is None:  # one per checkout: two checkouts benched at once must not install over each other
        venv = cache / f"ours-tree-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
    else:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True)
        if sha.returncode:
            raise Unavailable(f"git ref {ref!r}: {_last_line(sha.stderr)}")
        venv = cache / f"ours-{sha.stdout.strip()}"
    try:
        files = _source_files(ref)
    except (subprocess.CalledProcessError, OSError, KeyError) as exc:
        raise Unavailable(f"sources of {ref or 'the working tree'}: {exc}") from None
    _make_venv(venv)
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = next(Path(sys.prefix, "lib").glob("python*/site-packages"))
    (site / "ocsb-deps.pth").write_text(f"{deps}\n")
    bindir = _install_copy(venv, files, f"openclaw-sup {ref or 'working tree'}")
    # Its bytecode in the benches' cache now: a first start that compiles every module runs slower and keeps
    # more memory than any later one, so a fresh install would be measured unlike the dev venv.
    env = bytecode_env(cache / "pycache")
    subprocess.run([str(bindir / "python"), "-m", "compileall", "-q", "-j0", str(site / "openclaw_sup")], env=env,
                   capture_output=True, timeout=600)
    if (site / "openclaw_sup" / "config" / "dbtemplate.py").exists():  # as scripts/setup-venv does at install
        subprocess.run([str(bindir / "python"), "-m", "openclaw_sup.config.dbtemplate"], env=env, capture_output=True,
                       timeout=600)
    return bindir


def bytecode_env(pycache: Path) -> dict[str, str]:
    """This environment with bytecode caching on, in a tree outside the repo.

    Some machines set PYTHONDONTWRITEBYTECODE=1, so an editable checkout never gets .pyc files and every CLI
    start compiles the project's modules from source, while the peers' pip-installed packages come with
    .pyc files. PYTHONPYCACHEPREFIX puts every process on the same footing without writing into the repo.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Manager:
    """One supervisor under test: start it, know its pid and status command, stop it cleanly."""

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    # Random wait before each kill, counted from the previous respawn's report (seconds).
    wait_range: ClassVar[tuple[float, float]] = (1.2, 2.2)

    def __init__(self, report_port: int, keep_tmp: bool = False, base_env: Mapping[str, str] | None = None) -> None:
        self.report_port = report_port
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.keep_tmp = keep_tmp
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ocsb-{self.key}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.problems: list[str] = []

    # -- to be filled by each manager -----------------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The manager's (and its CLI's) environment; `base` overrides the one given at construction."""
        return dict(self.base_env if base is None else base)

    def status_argv(self) -> list[str]:
        raise NotImplementedError

    def log_file(self) -> Path:
        return self.tmp / "manager.out"

    def after_kills(self, kills: int) -> None:
        """Cross-check the manager's own view after the kill series; add anything odd to `problems`."""

    # -- common ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.started_at = time.time()
        out = open(self.tmp / "manager.out", "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        finally:
            out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`: a manager that needs the SIGKILL is worth noting."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.problems.append(f"{self.title}: did not exit within {timeout:g}s of SIGTERM; SIGKILLed")
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if code not in (0, -signal.SIGTERM):
            self.problems.append(f"{self.title}: exited with status {code} after SIGTERM")

    def cleanup(self) -> None:
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def tail(self) -> str:
        return _tail(self.log_file()) or _tail(self.tmp / "manager.out")


class Ours(Manager):
    """openclaw-sup: the supervisor, its fork server, and five `tiny` workers forked from it."""

    key = "ours"
    title = "openclaw-sup"

    def __init__(
        self,
        report_port: int,
        keep_tmp: bool = False,
        base_env: Mapping[str, str] | None = None,
        workers: dict[str, Any] | None = None,
        bindir: Path | None = None,
        title: str | None = None,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        """`tuning`: extra keys of the supervisor's settings file (e.g. {"forkServer": {"standbys": 0}})."""
        super().__init__(report_port, keep_tmp, base_env)
        self.bin = (bindir or OUR_BIN.parent) / "openclaw-sup"
        self.title = title or self.title
        self.state_dir = self.tmp / "state"
        self.state_dir.mkdir()
        self.gw_log = self.tmp / "gw.log"
        # Only the bench's workers: built-in ones that can be switched off (scheduler, channels) are.
        (self.state_dir / "openclaw.json").write_text(
            json.dumps(
                {"gateway": {"mode": "local"}, "logging": {"file": str(self.gw_log)}, "cron": {"enabled": False}}
            )
        )
        if workers is None:
            workers = {w: {"kind": "tiny", "options": {"port": report_port}} for w in WORKERS}
        self.settings_file = self.tmp / "sup.json"
        self.settings_file.write_text(
            json.dumps({"kinds": ["bench_kinds"], "restart": {"stableAfterMs": 500}, "workers": workers,
                        **(tuning or {})})
        )
        self.gateway_port = free_port()

    def argv(self) -> list[str]:
        return [str(self.bin), "gateway", "--allow-unconfigured", "--port", str(self.gateway_port)]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in (self.base_env if base is None else base).items() if not k.startswith("OPENCLAW_")}
        env.update(
            OPENCLAW_STATE_DIR=str(self.state_dir),
            HOME=str(self.tmp),
            OPENCLAW_SUP_CONFIG=str(self.settings_file),
            OPENCLAW_SKIP_CRON="1",
            OPENCLAW_SKIP_CHANNELS="1",
        )
        env.update(timeline_env(self.timeline_file, (), str(BENCH_DIR)))
        return env

    @property
    def timeline_file(self) -> Path:
        """The tree's own stamps (bench/timeline/): where each recovery's time goes."""
        return self.tmp / "timeline.txt"

    def status_argv(self) -> list[str]:
        return [str(self.bin), "status"]

    def log_file(self) -> Path:
        return self.gw_log

    @property
    def control(self) -> Path:
        return self.state_dir / "run" / "ctl.sock"

    def snapshot(self, timeout: float = 5.0) -> dict[str, Any]:
        return call(self.control, "status", timeout=timeout)

    def after_kills(self, kills: int) -> None:
        # The last replacement reported before it said ready: give it a moment to reach `running`.
        deadline = time.monotonic() + 5
        while True:
            try:
                snap = self.snapshot()
            except ControlError as exc:
                self.problems.append(f"openclaw-sup: status failed after the kill series: {exc}")
                return
            if all(w["state"] in SERVING for w in snap["workers"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for w in snap["workers"]:
            want = kills if w["name"] == "w0" else 0
            if w["state"] not in SERVING or w["restarts"] != want:
                self.problems.append(
                    f"openclaw-sup: after {kills} kills worker {w['name']} is {w['state']} "
                    f"with {w['restarts']} restarts (expected running, {want})"
                )
        log = self.gw_log.read_text(errors="replace") if self.gw_log.exists() else ""
        for needle in ("crash-looping", "Traceback", "fork server (pid", "did not say ready", "no heartbeat"):
            n = log.count(needle)
            if n:
                self.problems.append(f"openclaw-sup: gateway log has {n} line(s) containing {needle!r}")


def circus_section(tmp: Path, endpoint: str, check_delay: float | None) -> list[str]:
    """The `[circus]` section every circus run of the benches uses: control socket, log file, poll interval."""
    lines = ["[circus]", f"endpoint = {endpoint}", f"pubsub_endpoint = ipc://{tmp / 'pubsub.sock'}", "statsd = False",
             f"logoutput = {tmp / 'circus.log'}", "loglevel = INFO"]
    return lines if check_delay is None else [*lines, f"check_delay = {check_delay}"]


class Circus(Manager):
    """circusd 0.19.0 in the foreground, one watcher per worker; `check_delay` left at its 5 s default."""

    key = "circus"
    title = "circus (defaults)"
    wait_range = (2.2, 7.2)  # wide enough that kills do not phase-lock with the fixed 5 s poll
    check_delay: ClassVar[float | None] = None

    def __init__(
        self, report_port: int, bindir: Path, keep_tmp: bool = False, base_env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(report_port, keep_tmp, base_env)
        self.bindir = bindir
        self.endpoint = f"ipc://{self.tmp / 'endpoint.sock'}"
        lines = circus_section(self.tmp, self.endpoint, self.check_delay)
        for w in WORKERS:
            lines += [
                "",
                f"[watcher:{w}]",
                f"cmd = {bindir / 'python'}",
                f"args = -u {WORKER_PY} {w} {report_port}",
                "numprocesses = 1",
                "copy_env = True",
            ]
        self.ini = self.tmp / "circus.ini"
        self.ini.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [str(self.bindir / "circusd"), str(self.ini)]

    def status_argv(self) -> list[str]:
        return [str(self.bindir / "circusctl"), "--endpoint", self.endpoint, "status"]

    def log_file(self) -> Path:
        return self.tmp / "circus.log"


class CircusFast(Circus):
    """circus with the one change that makes it competitive: poll every 0.1 s instead of 5 s."""

    key = "circus-fast"
    title = "circus (check_delay 0.1)"
    wait_range = (1.2, 2.2)
    check_delay = 0.1


class Supervisord(Manager):
    """supervisord 4.3.0 with every program setting at its default (startsecs 1, autorestart unexpected)."""

    key = "supervisord"
    title = "supervisord (defaults)"

    def __init__(
        self, report_port: int, bindir: Path, keep_tmp: bool = False, base_env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(report_port, keep_tmp, base_env)
        self.bindir = bindir
        sock = self.tmp / "supervisor.sock"
        lines = [
            "[unix_http_server]",
            f"file = {sock}",
            "",
            "[supervisord]",
            f"logfile = {self.tmp / 'supervisord.log'}",
            f"pidfile = {self.tmp / 'supervisord.pid'}",
            "nodaemon = true",
            f"childlogdir = {self.tmp}",
            "loglevel = info",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl = unix://{sock}",
        ]
        for w in WORKERS:
            lines += ["", f"[program:{w}]", f"command = {bindir / 'python'} -u {WORKER_PY} {w} {report_port}"]
        self.conf = self.tmp / "supervisord.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [str(self.bindir / "supervisord"), "-c", str(self.conf)]

    def status_argv(self) -> list[str]:
        return [str(self.bindir / "supervisorctl"), "-c", str(self.conf), "status"]

    def log_file(self) -> Path:
        return self.tmp / "supervisord.log"

    def after_kills(self, kills: int) -> None:
        log = _tail(self.log_file(), 100_000)
        backoff = log.count("entered BACKOFF")
        if backoff:
            self.problems.append(f"supervisord: {backoff} kill(s) landed before startsecs (BACKOFF in its log)")


def stop_quietly(mgr: Manager) -> None:
    """Best-effort stop used on error paths: never raises."""
    with contextlib.suppress(Exception):
        mgr.stop()


def tear_down(mgr: Manager, listener: Listener) -> None:
    """After a manager's measures: stop it, kill (and report) workers that outlived it, report lines the
    listener could not parse, close the listener and remove the manager's temp dir."""
    stop_quietly(mgr)
    left = kill_leftovers(listener.pids(), mgr.started_at)
    if left:
        mgr.problems.append(f"{mgr.title}: worker pid(s) {left} outlived the manager; killed by the bench")
    if listener.bad_lines:
        mgr.problems.append(f"{mgr.title}: listener got unparsable lines: {listener.bad_lines[:3]}")
    listener.close()
    mgr.cleanup()
