"""The `browser` worker: Chromium over CDP for each browser profile, supervised (operations spec section 10).

Options (config/plan.py `worker_specs`): the `browser` config section, plus `gatewayPort` (the gateway's
effective port: the managed CDP range is port + 11 .. port + 110) and `stateDir`, which the supervisor adds.
Profiles (config/browser.py): `openclaw` (or `defaultProfile`) is auto-created; a profile with `cdpUrl` (or the
legacy top-level `browser.cdpUrl`) or `attachOnly` is attached to, never launched. A managed profile's Chromium
gets `--remote-debugging-port=<cdpPort>`, its own `--user-data-dir=<stateDir>/browser/<profile>/user-data`,
`--headless=new --disable-gpu` when there is no DISPLAY/WAYLAND_DISPLAY (or OPENCLAW_BROWSER_HEADLESS=1),
`--no-sandbox` with `noSandbox` (needed as root: Chromium refuses to run as root with its sandbox), then
`extraArgs`. Chromium runs in its own process group with PR_SET_PDEATHSIG, so it never outlives the worker; a
Chromium that exits or stops answering CDP is restarted with backoff (profile.py), and a worker that was
SIGKILLed is replaced by one that sweeps the old group and starts the profiles that were running.

RPCs served (params all take `profile?`, default `defaultProfile`):
  `browser.status` -> the selected profile's `{profile, state: config/restart.py's states (stopped|
      starting|running|crashed|backoff|failed|stopping), `attached` for a running attached profile, running,
      cdpReady, pid, cdpPort, cdpUrl, attachOnly, chosenBrowser, executablePath, browserVersion, userDataDir,
      headless, noSandbox, restarts, lastError, lastExit, startedAtMs, cdpReadyMs}` plus
      `{enabled, defaultProfile, profiles: [the same for every profile]}`.
  `browser.start` -> that profile's status once CDP answers (a websocket round trip, not just the port).
  `browser.stop` -> `{ok, profile, stopped}` (kills the whole group; releases an attached profile).
  `browser.tabs` -> `{profile, running, tabs: [{targetId, title, url, type}]}` (no auto-start).
  `browser.open {url}` -> `{ok, profile, targetId, url, title}` after the page's load event (auto-starts).
  `browser.navigate {url, targetId?}` -> `{ok, profile, targetId, url}` (first tab when no targetId).
  `browser.screenshot {targetId?}` -> `{ok, profile, targetId, url, format: png, data: base64, width, height}`
      (JPEG, without width/height, when the PNG would not fit on the bus).
  `browser.request {method, path, query, body}` -> upstream's browser control routes, as the real `openclaw
      browser` CLI sends them (control.py: `GET /`, `POST /start|/stop|/tabs/open|/navigate|/screenshot`,
      `GET /tabs|/profiles`).
Errors (code UNAVAILABLE, upstream's texts): `Failed to start Chrome CDP on port <port> for profile "<name>".`
(details.stderr has Chromium's last lines), `browser.executablePath not found: <path>`, `Port <port> is in use
for profile "<name>" but not by openclaw`, `Chrome CDP websocket for profile "<name>" is not reachable after
start`, `Remote CDP for profile "<name>" is not reachable at <cdpUrl>`. Bad params answer INVALID_REQUEST.
Event emitted: `browser` `{profile, state, pid, reason?, delay?}` on every state change.
"""

from __future__ import annotations

from openclaw_sup.workers.browser.service import main
from openclaw_sup.workers.registry import register

register("browser")(main)

__all__ = ["main"]
