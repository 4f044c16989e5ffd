"""The `agent` worker: agent turns for sessions, their transcripts, and the model providers.

Options (config/plan.py `worker_specs`): `agents` (the `agents` section without heartbeats), `models` (the
`models` section), optionally `stateDir` (else derived from the bus socket, then OPENCLAW_STATE_DIR or the
profile). State: `<stateDir>/agents/<agentId>/agent/openclaw-agent.sqlite` (WAL; transcripts and runs with
their idempotency keys) and the credentials of `models auth paste-token` in `auth-profiles.json` beside it.

RPCs from WebSocket clients (spec/protocol.md section 3): `agent` (two-stage: a partial `{runId, status:
"accepted", acceptedAt}` then `{runId, status: "ok"|"error", summary, result?}`; runId = idempotencyKey),
`agent.wait {runId, timeoutMs?}`, `chat.send` (answers `{runId, status: "started"}`; output as `chat` events),
`chat.history {sessionKey, limit?, offset?}`, `chat.abort {sessionKey, runId?}`. A key seen before (even
across a crash) returns the stored answer and never runs again; a run a crash cut short is stored as an error.

Events emitted: `agent` `{runId, seq, stream: lifecycle|assistant, ts, data, sessionKey, isHeartbeat?}` (data
`{phase: start|end|error, ...}` or `{text, delta}`) and `chat` `{runId, sessionKey, seq, agentId, state:
delta|final|aborted|error, deltaText?, message?, usage?, stopReason?, errorMessage?, errorKind?}`.

Bus contracts served (other workers and the gateway's HTTP API call them):

`agent.turn` (see workers/scheduler/__init__.py for the scheduler's side): params `{agentId, sessionKey,
  message, timeoutSeconds, source: {kind: cron|heartbeat|channel|hook, ...}, model?, systemEvents?,
  idempotencyKey?}` -> `{status: ok|error|skipped, summary?, error?, reason?, route?, model?, usage?}`.
  A channel source `{kind: "channel", channel, accountId, from, chatType, messageId}` records the route
  `{channel, accountId, to}` answered for that session (and as the agent's last route) from then on.

`agent.complete` (the HTTP API): params `{model, agentId?, sessionKey?, messages: [{role, content}], stream,
  maxTokens?, temperature?, user?}`; with `stream` the worker sends partial answers `{delta}` in order; the
  final answer is `{text, model: "<provider>/<model>", usage: {inputTokens, outputTokens}, finishReason}`.
  Errors: `INVALID_REQUEST` (bad params, unknown model), `UNAVAILABLE` (provider down, timeout, no
  credentials), each message naming the fix.
"""

from __future__ import annotations

from openclaw_sup.workers.agent.service import main
from openclaw_sup.workers.registry import register

register("agent")(main)

__all__ = ["main"]
