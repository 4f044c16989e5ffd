"""The Control UI over HTTP on the real gateway port: the shell and its hashed assets, cache and security headers,
HEAD, the `Accept`-aware app-shell fallback, path traversal, `basePath`, `enabled` hot-applied by a config
edit, `root` serving upstream's built UI, and the real `openclaw dashboard --no-open` printing our URL.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient

TOKEN = "ui-serving-token-0123456789abcdef"
UPSTREAM_UI = Path(os.environ.get("OPENCLAW_CLI") or Path.home() / ".cache/openclaw-sup/oc/node_modules/.bin/openclaw"
                   ).resolve().parent / "dist" / "control-ui"
MAX_UI_BYTES = 300 * 1024


def make_gateway(factory: Any, ui: dict[str, Any] | None = None) -> Gateway:
    gw_cfg: dict[str, Any] = {"auth": {"mode": "token", "token": TOKEN}}
    if ui is not None:
        gw_cfg["controlUi"] = ui
    return factory({"kinds": []}, config={"gateway": gw_cfg, "agents": {"defaults": {"model": "echo/echo"}}})


def fetch(gw: Gateway, path: str, method: str = "GET", headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def write_config(gw: Gateway, ui: dict[str, Any]) -> None:
    path = gw.state_dir / "openclaw.json"
    cfg = json.loads(path.read_text())
    cfg["gateway"]["controlUi"] = ui
    path.write_text(json.dumps(cfg))


def asset_paths(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/[^"]*assets/[^"]+)"', html)


def test_shell_and_hashed_assets_with_cache_and_security_headers(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    status, headers, body = fetch(gw, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache"
    csp = headers["content-security-policy"]
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    html = body.decode()
    assert "<script>" not in html and " style=" not in html  # nothing inline: the strict CSP would block it
    assets = asset_paths(html)
    assert len(assets) >= 9
    total = len(body)
    for path in assets:
        a_status, a_headers, a_body = fetch(gw, path)
        assert a_status == 200, path
        assert a_headers["cache-control"] == "public, max-age=31536000, immutable"
        stem_hash = path.rsplit("/", 1)[1].split(".")[-2]
        assert stem_hash == hashlib.sha256(a_body).hexdigest()[:12], path
        assert a_headers["content-type"].startswith("text/css" if path.endswith(".css") else "application/javascript")
        total += len(a_body)
    _, _, icon = fetch(gw, "/favicon.svg")
    assert total + len(icon) < MAX_UI_BYTES

    h_status, h_headers, h_body = fetch(gw, "/", "HEAD", {"Accept": "text/html"})
    assert (h_status, h_body) == (200, b"") and h_headers["content-type"].startswith("text/html")
    assert h_headers["etag"] == headers["etag"]
    assert fetch(gw, "/", headers={"If-None-Match": headers["etag"]})[0] == 304
    assert fetch(gw, assets[0], "HEAD")[0] == 200
    assert fetch(gw, "/assets/app.000000000000.js")[0] == 404  # a stale hash is not served


def test_app_shell_fallback_respects_accept(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    shell = fetch(gw, "/")[2]
    for accept in (None, "*/*", "text/html", "text/html,application/xhtml+xml,*/*;q=0.8", "text/*"):
        status, _, body = fetch(gw, "/workers", headers={"Accept": accept} if accept else {})
        assert (status, body) == (200, shell), accept
    for accept in ("application/json", "text/html;q=0, */*", "image/png"):
        assert fetch(gw, "/workers", headers={"Accept": accept})[0] == 404, accept
    assert fetch(gw, "/missing.png", headers={"Accept": "text/html"})[0] == 404
    assert fetch(gw, "/assets/missing.js", headers={"Accept": "text/html"})[0] == 404
    status, _, body = fetch(gw, "/health")
    assert status == 200 and json.loads(body)["ok"] is True
    status, _, body = fetch(gw, "/v1/models", headers={"Accept": "text/html"})
    assert status == 404 and b"<html" not in body  # an API path never gets the shell
    assert fetch(gw, "/", "POST")[0] == 405


def test_no_path_escapes_the_ui_directory(gateway_factory, tmp_path: Path) -> None:
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("do-not-serve")
    root = tmp_path / "ui-root"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><html><head></head><body>root shell</body></html>")
    (root / "assets" / "main-abc123.js").write_text("console.log(1)")
    (root / "assets" / "leak.js").symlink_to(secret)
    gw = make_gateway(gateway_factory, {"root": str(root)}).start()
    probes = ["/../outside-secret.txt", "/%2e%2e/outside-secret.txt", "/assets/..%2f..%2foutside-secret.txt",
              "/%2e%2e%2foutside-secret.txt", "/..%5coutside-secret.txt", "/assets/leak.js", "/%00index.html",
              "/assets/%2e%2e/%2e%2e/outside-secret.txt", "//etc/passwd", "/assets/../../outside-secret.txt"]
    for path in probes:
        status, _, body = fetch(gw, path, headers={"Accept": "application/json"})
        assert b"do-not-serve" not in body and b"root:" not in body, path
        assert status in (400, 404), (path, status)
    status, headers, body = fetch(gw, "/assets/main-abc123.js")
    assert status == 200 and body == b"console.log(1)" and "immutable" in headers["cache-control"]
    assert fetch(gw, "/anything", headers={"Accept": "text/html"})[2].endswith(b"root shell</body></html>")


def test_base_path_and_enabled_hot_applied_without_rebind(gateway_factory) -> None:
    gw = make_gateway(gateway_factory, {"basePath": "/openclaw/"}).start()
    status, headers, _ = fetch(gw, "/openclaw?x=1")
    assert status == 302 and headers["location"] == "/openclaw/?x=1"
    status, _, body = fetch(gw, "/openclaw/")
    assert status == 200 and all(p.startswith("/openclaw/assets/") for p in asset_paths(body.decode()))
    assert b'data-base-path="/openclaw"' in body
    assert fetch(gw, "/openclaw/chat", headers={"Accept": "text/html"})[0] == 200
    assert fetch(gw, "/", headers={"Accept": "text/html"})[0] == 404
    assert fetch(gw, "/workers", headers={"Accept": "text/html"})[0] == 404

    client = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    client.connect()
    pids = gw.pids()
    write_config(gw, {"basePath": "/openclaw", "enabled": False})
    wait_for(lambda: fetch(gw, "/openclaw/")[0] == 404, 10, what="the UI switched off by the config edit")
    # the record is flushed on the loop's next pass, which may come after the 404 was served
    wait_for(lambda: "apply gateway.controlUi" in gw.log_text(), 5, what="the reload record")
    assert "re-bind" not in gw.log_text()
    assert client.request("health")["ok"] is True  # the same socket: the listener did not move
    assert gw.pids() == pids
    write_config(gw, {"basePath": "/openclaw", "enabled": True})
    wait_for(lambda: fetch(gw, "/openclaw/")[0] == 200, 10, what="the UI back on")
    client.close()


def test_control_ui_config_needs_gateway_auth(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    assert fetch(gw, "/control-ui-config.json")[0] == 401
    assert fetch(gw, "/control-ui-config.json", headers={"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = fetch(gw, "/control-ui-config.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["basePath"] == ""


@pytest.mark.skipif(not (UPSTREAM_UI / "index.html").exists(),
                    reason=f"upstream's built Control UI is not installed at {UPSTREAM_UI} "
                           "(scripts/install-openclaw-cli installs the npm package)")
def test_root_serves_upstream_built_ui(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, {"root": str(UPSTREAM_UI)}).start()
    status, headers, body = fetch(gw, "/")
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert b'data-openclaw-control-ui-base-path=""' in body
    inline = re.findall(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", body, re.S)
    assert inline and all("'sha256-" in headers["content-security-policy"] for _ in inline)
    module = re.search(rb'src="(/assets/[^"]+\.js)"', body).group(1).decode()
    status, headers, _ = fetch(gw, module, "HEAD")
    assert status == 200 and "immutable" in headers["cache-control"]
    assert fetch(gw, "/favicon.svg")[1]["cache-control"] == "no-cache"
    assert fetch(gw, "/assets/not-there-123.js")[0] == 404

    write_config(gw, {"root": str(tmp_path / "no-such-build")})
    status, _, body = wait_for(lambda: (r := fetch(gw, "/"))[0] == 503 and r, 10, what="a 503 for a missing root")
    assert b"Control UI assets not found at" in body


def test_real_cli_dashboard_prints_our_url(gateway_factory) -> None:
    gw = make_gateway(gateway_factory, {"basePath": "/ops"}).start()
    state = gw.root / "cli-state"
    state.mkdir(exist_ok=True)
    (state / "openclaw.json").write_text(json.dumps({"gateway": {
        "mode": "local", "port": gw.port, "auth": {"mode": "token", "token": TOKEN},
        "controlUi": {"basePath": "/ops"}}}))
    out = run_openclaw(gw, "dashboard", "--no-open")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Dashboard URL: http://127.0.0.1:{gw.port}/ops/" in out.stdout
    assert "dashboard is unavailable" not in out.stdout + out.stderr and TOKEN not in out.stdout

    ours = gw.run_cli("dashboard", "--no-open")
    assert ours.returncode == 0, ours.stderr
    assert f"Dashboard URL: http://127.0.0.1:{gw.port}/ops/" in ours.stdout and TOKEN not in ours.stdout
    as_json = json.loads(gw.run_cli("dashboard", "--json").stdout)
    assert as_json["httpUrl"] == f"http://127.0.0.1:{gw.port}/ops/" and as_json["tokenIncluded"] is True
    assert as_json["url"] == f"http://127.0.0.1:{gw.port}/ops/#token={TOKEN}"

    write_config(gw, {"basePath": "/ops", "enabled": False})
    wait_for(lambda: fetch(gw, "/ops/")[0] == 404, 10, what="the UI switched off")
    off = gw.run_cli("dashboard", "--no-open")
    assert off.returncode == 1 and "gateway.controlUi.enabled: false" in off.stderr
    write_config(gw, {"basePath": "/ops"})
    gw.stop()
    down = gw.run_cli("dashboard", "--no-open")
    assert down.returncode == 1 and "no gateway answers" in down.stderr


def test_dashboard_over_tls(gateway_factory) -> None:
    gw = gateway_factory({"kinds": []}, config={"gateway": {"auth": {"mode": "token", "token": TOKEN},
                                                            "tls": {"enabled": True}}}).start()
    out = gw.run_cli("dashboard", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    info = json.loads(out.stdout)
    assert info["httpUrl"] == f"https://127.0.0.1:{gw.port}/" and info["wsUrl"] == f"wss://127.0.0.1:{gw.port}/"
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=10, context=ssl._create_unverified_context())
    conn.request("GET", "/", headers={"Accept": "text/html"})
    res = conn.getresponse()
    assert res.status == 200 and b"openclaw-sup dashboard" in res.read()
    conn.close()
