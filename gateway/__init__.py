"""The gateway port: one listener for the WebSocket protocol, the HTTP API, webhooks and health probes."""
