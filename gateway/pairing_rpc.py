"""`channels.pairing.list|approve|dismiss`: DM pairing requests over the WebSocket protocol, as upstream's.

Shapes follow upstream's handlers: `list {channel?, accountId?}` -> `{accounts, requests, commandOwnerConfigured,
limits}`; `approve {channel, accountId?, requestId, notify?}` -> `{requestId, senderId, notification}` where
notification is `not-requested | sent | failed`; `dismiss {channel, accountId?, requestId}` -> `{requestId,
senderId}`. A request id is upstream's: sha256 of channel, account, sender and creation time, base64url, 32 chars.

The pairing store is the one the channel workers and `openclaw-sup pairing` use; it is opened per call on a
thread (SQLite, WAL), so the event loop never waits on the disk. `notify` tells the sender through the account's
worker (`channel.send`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from typing import TYPE_CHECKING, Any

from openclaw_sup.config.pairing_store import (
    APPROVED_NOTICE,
    MAX_PENDING_PER_ACCOUNT,
    REQUEST_TTL_MS,
    PairingRequest,
    PairingStore,
    iso,
    store_path,
)
from openclaw_sup.config.plan import channel_accounts
from openclaw_sup.gateway.protocol import MethodError, invalid

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

OPERATOR_PAIRING = "operator.pairing"
SCOPES = {"channels.pairing.list": OPERATOR_PAIRING, "channels.pairing.approve": OPERATOR_PAIRING,
          "channels.pairing.dismiss": OPERATOR_PAIRING}
LABELS = {"irc": "IRC", "telegram": "Telegram", "webchat": "WebChat"}
SENDER_LABELS = {"irc": "nick", "telegram": "user id"}
NOTIFY_TIMEOUT_S = 35.0


def request_id(req: PairingRequest) -> str:
    raw = f"{req.channel}\0{req.account_id}\0{req.sender_id}\0{iso(req.created_at)}".encode()
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")[:32]


def public_request(req: PairingRequest) -> dict[str, Any]:
    meta = {k: v for k, v in (("name", req.sender_name), ("chatId", req.chat_id), ("code", req.code)) if v}
    return {"requestId": request_id(req), "channel": req.channel,
            "channelLabel": LABELS.get(req.channel, req.channel.capitalize()), "accountId": req.account_id,
            "senderId": req.sender_id, "senderLabel": SENDER_LABELS.get(req.channel, "id"),
            **({"metadata": meta} if meta else {}), "createdAt": iso(req.created_at),
            "lastSeenAt": iso(req.created_at), "expiresAt": iso(req.created_at + REQUEST_TTL_MS),
            "notifySupported": True}


class PairingRpc:
    def __init__(self, core: GatewayCore) -> None:
        self.core = core

    def methods(self) -> dict[str, Any]:
        return {"channels.pairing.list": self.list, "channels.pairing.approve": self.approve,
                "channels.pairing.dismiss": self.dismiss}

    def _accounts(self, channel: Any = None, account: Any = None) -> list[tuple[str, str]]:
        """(channel, account) of the configured accounts that use DM pairing, optionally narrowed."""
        out = []
        for opts in channel_accounts(self.core.host.gateway_config()).values():
            if (opts.get("dmPolicy") or "pairing") != "pairing":
                continue
            if channel and str(channel).lower() != opts["channel"]:
                continue
            if account and str(account).lower() != str(opts["accountId"]).lower():
                continue
            out.append((opts["channel"], str(opts["accountId"])))
        return out

    async def _store(self, fn: Any) -> Any:
        def run() -> Any:
            store = PairingStore(store_path(self.core.state_dir))
            try:
                return fn(store)
            finally:
                store.close()

        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def list(self, params: dict[str, Any]) -> dict[str, Any]:
        accounts = self._accounts(params.get("channel"), params.get("accountId"))
        if params.get("channel") and not accounts:
            raise invalid(f"unknown pairing channel: {params['channel']} (no configured account uses dmPolicy "
                          "\"pairing\")")

        def pending(store: PairingStore) -> list[PairingRequest]:
            return [r for ch, acct in accounts for r in store.pending(ch, acct)]

        reqs = await self._store(pending)
        return {"accounts": [{"channel": ch, "channelLabel": LABELS.get(ch, ch.capitalize()), "accountId": acct,
                              "notifySupported": True} for ch, acct in accounts],
                "requests": [public_request(r) for r in reqs], "commandOwnerConfigured": False,
                "limits": {"pendingPerAccount": MAX_PENDING_PER_ACCOUNT, "ttlMs": REQUEST_TTL_MS}}

    def _target(self, params: dict[str, Any], method: str) -> tuple[str, str, str]:
        channel, rid = params.get("channel"), params.get("requestId")
        if not isinstance(channel, str) or not channel or not isinstance(rid, str) or not rid:
            raise invalid(f"invalid {method} params: channel and requestId are required")
        accounts = self._accounts(channel, params.get("accountId") or None)
        if len(accounts) != 1:
            raise invalid(f"channel account does not use DM pairing: {channel}:{params.get('accountId') or 'default'}")
        return accounts[0][0], accounts[0][1], rid

    async def _find(self, store_fn: Any, channel: str, account: str, rid: str) -> PairingRequest:
        def find_and(store: PairingStore) -> PairingRequest | None:
            match = next((r for r in store.pending(channel, account) if request_id(r) == rid), None)
            return store_fn(store, match) if match is not None else None

        done = await self._store(find_and)
        if done is None:
            raise invalid("pending DM access request no longer exists")
        return done

    async def approve(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, account, rid = self._target(params, "channels.pairing.approve")
        req = await self._find(lambda s, r: s.approve(r.channel, r.code, r.account_id, source="control-ui"),
                               channel, account, rid)
        self.core.log("info", f"pairing: {channel}/{account} sender {req.sender_id} approved from the dashboard")
        notification = "not-requested"
        if params.get("notify") is True:
            notification = await self._notify(req)
        return {"requestId": rid, "senderId": req.sender_id, "notification": notification,
                "commandOwnerBootstrap": "not-requested"}

    async def _notify(self, req: PairingRequest) -> str:
        worker = f"channel:{req.channel}:{req.account_id}"
        try:
            res = await self.core.host.call_worker(worker, "channel.send", {
                "text": APPROVED_NOTICE, "to": req.chat_id or req.sender_id, "idempotencyKey": str(uuid.uuid4()),
            }, timeout=NOTIFY_TIMEOUT_S)
        except MethodError as exc:
            self.core.log("warn", f"pairing: approval notice to {req.sender_id} via {worker} failed: {exc}")
            return "failed"
        if isinstance(res, dict) and res.get("ok") is False:
            self.core.log("warn", f"pairing: approval notice to {req.sender_id} via {worker} failed: "
                                  f"{res.get('error')}")
            return "failed"
        return "sent"

    async def dismiss(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, account, rid = self._target(params, "channels.pairing.dismiss")
        req = await self._find(lambda s, r: s.dismiss(r.channel, r.account_id, r.sender_id), channel, account, rid)
        self.core.log("info", f"pairing: {channel}/{account} request from {req.sender_id} dismissed")
        return {"requestId": rid, "senderId": req.sender_id}
