"""Channel workers: one process per enabled channel account (`channel:<channel>:<accountId>`), operations spec
section 7. Kinds `channel.irc`, `channel.telegram` and `channel.webchat` register in `kinds.py` (the fork
server imports it); this package itself stays import-light.

Bus methods each channel worker serves (the gateway and the scheduler call them):
- `channels.status` `{probe?, timeoutMs?}` -> `{accountId, name?, enabled, configured, running, connected,
  lastError, lastConnectedAt, lastInboundAt, lastOutboundAt, dmPolicy, groupPolicy, allowFrom, queue: {counts},
  mode, probe?: {ok, elapsedMs?, error?, ...}, lastProbeAt?, stopped?}` (gateway/methods.py aggregates them).
- `channels.start` / `channels.stop` / `channels.logout` `{}` -> `{channel, accountId, started|stopped|loggedOut}`:
  connect or disconnect the adapter; the worker keeps running (and serving status) either way.
- `channel.send` `{text, to?, idempotencyKey?, timeoutSeconds?}` -> `{ok: true, messageId?}` | `{ok: false,
  error, queued?}`: queued in the durable outbox under `send:<idempotencyKey>` (a repeat is not re-sent);
  `to` defaults to the account's `defaultTo`. Contract of workers/scheduler/__init__.py.
- `channel.describe` `{}` -> `{channel, accountId, heartbeatVisibility?}`.

Requests each channel worker sends: `agent.turn` to `agent` with `source: {kind: "channel", channel, accountId,
from, chatType, messageId, chatId, senderName}` and `sessionKey` `agent:<agentId>:<channel>:<direct|group>:<peer>`
(/tmp contract shared with the agent worker); UNAVAILABLE or a timeout leaves the message queued and retried.
"""
