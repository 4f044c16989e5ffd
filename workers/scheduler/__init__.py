"""The `scheduler` worker: durable cron jobs and per-agent heartbeats (operations spec sections 8 and 9).

Options (config/plan.py `worker_specs`): `cron` (the `cron` section), `heartbeat` (`agents.defaults.heartbeat`),
`agentHeartbeats` (agentId -> its heartbeat), optionally `stateDir` (else derived from the bus socket, then
OPENCLAW_STATE_DIR or the profile) and, for tests only, `testTimeScale` (multiplies the error backoff unit).
The store is upstream's: `cron_jobs` and `task_runs` of `<stateDir>/state/openclaw.sqlite` (store.py). RPCs
served: `cron.status|list|get|add|update|remove|run|runs`, `set-heartbeats`, `wake`. Events emitted: `cron`
(`{jobId, action: added|updated|removed|started|finished, runId?, status?, error?, summary?, runAtMs?,
durationMs?, nextRunAtMs?, deliveryStatus?}`) and `heartbeat`
(`{ts, agentId, status: sent|ok-token|ok-empty|skipped|failed, reason?, preview?, durationMs, channel?,
accountId?, to?}`) after every heartbeat, which the supervisor keeps for `last-heartbeat`.

Bus contracts this worker defines (requests it sends; the answering workers implement them):

`agent.turn` to worker `agent` - one agent turn for a cron job or a heartbeat.
  params: `{agentId, sessionKey, message, timeoutSeconds, source: {kind: cron|heartbeat, jobId?, jobName?,
  runId?, trigger?, target?}, model?, thinking?, fallbacks?, lightContext?, toolsAllow?, kind?: "heartbeat",
  systemEvents?: [{text, ts}]}`. `sessionKey` is `cron:<jobId>` for isolated jobs, `agent:<agentId>:main`
  for main/current ones and heartbeats, the given key for `session:<key>`. `systemEvents` are the texts queued
  by `wake` and systemEvent jobs since the agent's last heartbeat.
  answer: `{status: ok|error|skipped, summary?: the reply text, error?, reason?: why skipped (e.g.
  empty-heartbeat-file, dm-blocked), route?: {channel, accountId?, to?, threadId?} (where the session's
  owner/last conversation lives, used by heartbeat targets owner/last), model?, usage?}`.
  The request times out after `timeoutSeconds` + 10 s. A missing agent worker (`UNAVAILABLE`) or a timeout
  makes the run an error carrying that message.

`channel.send` to worker `channel:<channel>:<accountId>` (accountId `default` when unset) - an announce
  delivery or a heartbeat alert. params: `{text, to?, threadId?, idempotencyKey: runId, source: {kind,
  jobId?, jobName?, agentId?, runId}}`; answer `{ok: true, messageId?}` (or `{ok: false, error}`).
  A missing worker fails the delivery (`deliveryStatus: not-delivered`); the run stays `ok`.

`channel.describe` to the same worker - asked before a heartbeat that targets a channel. params `{}`;
  answer `{channel, accountId, heartbeatVisibility?: {showOk, showAlerts, useIndicator}}`. The supervisor's
  `UNAVAILABLE` "no worker named ..." answer means the account is not configured: `heartbeat: unknown
  accountId` is logged and the delivery skipped. Any other error counts as "exists, default visibility".

With `cron.enabled: false` the worker still starts: it logs `cron: scheduler disabled; jobs will not run
automatically`, serves the RPCs and runs jobs only when asked (`cron.run`). `OPENCLAW_SKIP_CRON=1` keeps it from
starting at all; the supervisor then logs that line itself.
"""

from __future__ import annotations

from openclaw_sup.workers.registry import register
from openclaw_sup.workers.scheduler.service import main

register("scheduler")(main)

__all__ = ["main"]
