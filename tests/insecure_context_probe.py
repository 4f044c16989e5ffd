"""Run inside a private network namespace (see test_control_ui_browser.py): a gateway bound to a non-loopback
address of that namespace, and Chromium opening the dashboard there over plain HTTP, which is no secure context.

Prints one JSON line: what the page says and whether the browser saw a secure context and opened a WebSocket.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from conftest import Gateway

TOKEN = "insecure-context-token-0123456789"


def main(root: Path, host: str, screenshot: Path) -> None:
    gw = Gateway(root, {"kinds": []}, config={"gateway": {"bind": "custom", "customBindHost": host,
                                                          "auth": {"mode": "token", "token": TOKEN}}})
    gw.start()
    sockets: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(f"http://{host}:{gw.port}/")
            page.wait_for_selector("#insecure", timeout=15_000)
            page.screenshot(path=str(screenshot))
            out = {"title": page.inner_text("#insecure h1"), "text": page.inner_text("#insecure"),
                   "secure": page.evaluate("window.isSecureContext"), "sockets": sockets,
                   "status": page.inner_text("#connection-status")}
            browser.close()
    finally:
        gw.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
