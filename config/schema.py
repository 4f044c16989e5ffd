"""The schema of the sections of `openclaw.json` that openclaw-sup implements, written as data.

Upstream validates strictly, so an unknown key inside a section we implement is an error (with a "did you
mean" hint); a top-level section upstream has but we do not implement is accepted and reported as a notice,
so the same file keeps working with the real `openclaw` CLI. Every error names the path, the reason and the
value, with secrets masked.

A field spec is a plain dict: `type` (string, integer, number, boolean, false, array, object, map, union,
any), and as needed `enum`, `min`, `max`, `pattern`, `format`, `default`, `secret`, `fields` (object),
`values` / `keys` (map), `items` (array), `alts` (union), `checks` (cross-field rules by name).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

from openclaw_sup.config import durations
from openclaw_sup.config.durations import is_duration
from openclaw_sup.config.record import record

REDACTED = "__OPENCLAW_REDACTED__"
MASK = "***"

Spec = dict[str, Any]


# ---------------------------------------------------------------- spec constructors (they only build dicts)

def string(**kw: Any) -> Spec:
    return {"type": "string", **kw}


def integer(min: int | None = None, max: int | None = None, **kw: Any) -> Spec:
    return {"type": "integer", "min": min, "max": max, **kw}


def number(min: float | None = None, max: float | None = None, **kw: Any) -> Spec:
    return {"type": "number", "min": min, "max": max, **kw}


def boolean(**kw: Any) -> Spec:
    return {"type": "boolean", **kw}


def enum(*values: str, **kw: Any) -> Spec:
    return {"type": "string", "enum": values, **kw}


def array(items: Spec | None = None, **kw: Any) -> Spec:
    return {"type": "array", "items": items or ANY, **kw}


def obj(fields: dict[str, Spec], **kw: Any) -> Spec:
    return {"type": "object", "fields": fields, **kw}


def mapping(values: Spec, **kw: Any) -> Spec:
    return {"type": "map", "values": values, **kw}


def union(*alts: Spec, **kw: Any) -> Spec:
    return {"type": "union", "alts": alts, **kw}


ANY: Spec = {"type": "any"}
ANY_OBJECT: Spec = {"type": "map", "values": ANY}
FALSE: Spec = {"type": "false"}
PORT = integer(1, 65535)
STRINGS = array(string())
IDS = array(union(string(), number()))
SECRET_REF = obj({"source": enum("env", "file", "exec"), "provider": string(), "id": string()})


def secret() -> Spec:
    """A credential: a string or upstream's SecretRef object; masked in every output."""
    return union(string(), SECRET_REF, secret=True)


# ---------------------------------------------------------------- the sections we implement

LEVELS = ("silent", "fatal", "error", "warn", "info", "debug", "trace")
DURATION = string(format="duration")
HHMM = "hhmm"

GATEWAY = obj({
    "mode": enum("local", "remote"),
    "port": integer(1, 65535, default=18789),
    "bind": enum("loopback", "lan", "tailnet", "auto", "custom", default="loopback"),
    "customBindHost": string(format="bind-host"),
    "auth": obj({
        "mode": enum("none", "token", "password", "trusted-proxy"),
        "token": secret(),
        "password": secret(),
        "allowTailscale": boolean(),
        "rateLimit": obj({
            "maxAttempts": integer(1),
            "windowMs": integer(0),
            "lockoutMs": integer(0),
            "exemptLoopback": boolean(),
        }),
        "trustedProxy": ANY_OBJECT,
    }),
    "tailscale": obj({
        "mode": enum("off", "serve", "funnel", default="off"),
        "resetOnExit": boolean(),
        "serviceName": string(pattern=r"^svc:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"),
        "preserveFunnel": boolean(),
    }),
    "controlUi": obj({
        "enabled": boolean(default=True),
        "basePath": string(format="base-path"),
        "root": string(),
        "experimental": obj({"customPlugins": boolean()}),
        "environment": obj({"label": string(), "color": enum("teal", "amber", "purple", "coral", "pink", "blue",
                                                              "green", "red", "gray")}),
        "communityInvite": boolean(),
        "github": obj({"token": secret()}),
        "sessionObserver": boolean(),
        "automaticallyFetchFavicons": boolean(),
        "allowedOrigins": STRINGS,
        "embedSandbox": enum("strict", "scripts", "trusted"),
        "allowExternalEmbedUrls": boolean(),
        "chatMessageMaxWidth": string(),
        "dangerouslyAllowHostHeaderOriginFallback": boolean(),
        "allowInsecureAuth": boolean(),
        "dangerouslyDisableDeviceAuth": boolean(),
    }),
    "remote": obj({
        "enabled": boolean(),
        "url": string(),
        "transport": enum("ssh", "direct", default="ssh"),
        "token": secret(),
        "password": secret(),
        "remotePort": integer(1, 65535, default=18789),
        "sshTarget": string(),
        "sshIdentity": string(),
        "tlsFingerprint": string(),
        "sshHostKeyPolicy": string(default="strict"),
    }),
    "reload": obj({
        "mode": enum("off", "hot", "restart", "hybrid", default="hybrid"),
        "debounceMs": integer(0),
        "deferralTimeoutMs": integer(0),
    }),
    "tls": obj({
        "enabled": boolean(default=False),
        "autoGenerate": boolean(default=True),
        "certPath": string(),
        "keyPath": string(),
        "caPath": string(),
    }),
    "trustedProxies": STRINGS,
    "allowRealIpFallback": boolean(default=False),
    "publicOrigin": string(),
    "http": obj({
        "endpoints": obj({
            "chatCompletions": obj({
                "enabled": boolean(default=False),
                "maxBodyBytes": integer(1),
                "maxImageParts": integer(0),
                "maxTotalImageBytes": integer(1),
                "images": ANY_OBJECT,
            }),
            "responses": obj({
                "enabled": boolean(),
                "maxBodyBytes": integer(1),
                "maxUrlParts": integer(0),
                "files": ANY_OBJECT,
                "images": ANY_OBJECT,
            }),
        }),
        "securityHeaders": ANY_OBJECT,
    }),
    "tools": obj({"allow": STRINGS, "deny": STRINGS}),
    "nodes": obj({
        "pairing": obj({"autoApproveLocal": boolean(), "autoApproveCidrs": STRINGS, "sshVerify": boolean()},
                       open=True),
        "commands": obj({"allow": STRINGS, "deny": STRINGS}, open=True),
    }, open=True),
    "push": ANY_OBJECT,
    "terminal": ANY_OBJECT,
    "handshakeTimeoutMs": integer(1),
    "channelHealthCheckMinutes": integer(0),
    "channelStaleEventThresholdMinutes": integer(1),
    "channelMaxRestartsPerHour": integer(1),
}, checks=("custom_bind",))

LOGGING = obj({
    "level": enum(*LEVELS, default="info"),
    "consoleLevel": enum(*LEVELS, default="info"),
    "file": string(),
    "maxFileBytes": integer(1, default=104_857_600),
    "consoleStyle": enum("pretty", "compact", "json"),
    "redactSensitive": enum("off", "tools"),
    "redactPatterns": STRINGS,
})

CRON = obj({
    "enabled": boolean(default=True),
    "store": string(),
    "maxConcurrentRuns": integer(1),
    "retry": ANY_OBJECT,
    "triggers": obj({"enabled": boolean()}),
    "webhook": string(format="http-url"),
    "webhookToken": secret(),
    "webhookSsrfPolicy": ANY_OBJECT,
    "sessionRetention": union(DURATION, FALSE),
    "runLog": ANY_OBJECT,
    "failureAlert": union(FALSE, obj({
        "enabled": boolean(),
        "after": integer(1),
        "cooldownMs": integer(0),
        "includeSkipped": boolean(),
        "mode": enum("announce", "webhook"),
        "channel": string(),
        "to": string(),
        "accountId": string(),
    })),
    "failureDestination": obj({
        "channel": string(), "to": string(), "accountId": string(), "mode": enum("announce", "webhook"),
    }),
})

HEARTBEAT = obj({
    "agentId": string(),
    "every": string(format="duration"),
    "activeHours": obj({
        "start": string(format=HHMM),
        "end": string(format="hhmm-end"),
        "timezone": string(),
    }),
    "model": string(),
    "session": string(),
    "target": string(),
    "directPolicy": enum("allow", "block"),
    "to": string(),
    "accountId": string(),
    "prompt": string(),
    "timeoutSeconds": integer(1),
    "lightContext": boolean(),
    "isolatedSession": boolean(),
})

AGENTS = obj({
    "defaults": obj({
        "heartbeat": HEARTBEAT,
        "model": union(string(), obj({"primary": string(), "fallbacks": STRINGS})),
        "workspace": string(),
        "maxConcurrent": integer(1),
    }, open=True),
    "list": array(ANY_OBJECT),
    "entries": ANY_OBJECT,
})

BROWSER_PROFILE = obj({
    "cdpPort": PORT,
    "cdpUrl": string(format="cdp-url"),
    "userDataDir": string(),
    "mcpCommand": string(),
    "mcpArgs": STRINGS,
    "driver": enum("openclaw", "clawd", "existing-session"),
    "headless": boolean(),
    "executablePath": string(),
    "attachOnly": boolean(),
    "color": string(pattern=r"^#?[0-9a-fA-F]{6}$"),
}, checks=("browser_profile",))

BROWSER = obj({
    "enabled": boolean(default=True),
    "evaluateEnabled": boolean(),
    "cdpUrl": string(format="cdp-url"),
    "remoteCdpTimeoutMs": integer(0),
    "remoteCdpHandshakeTimeoutMs": integer(0),
    "localLaunchTimeoutMs": integer(1, 120_000),
    "localCdpReadyTimeoutMs": integer(1, 120_000),
    "actionTimeoutMs": integer(1),
    "color": string(),
    "executablePath": string(),
    "headless": boolean(),
    "noSandbox": boolean(),
    "attachOnly": boolean(),
    "cdpPortRangeStart": PORT,
    "defaultProfile": string(),
    "snapshotDefaults": ANY_OBJECT,
    "ssrfPolicy": ANY_OBJECT,
    "profiles": mapping(BROWSER_PROFILE, keys=r"^[a-z0-9-]+$"),
    "extraArgs": STRINGS,
    "tabCleanup": obj({
        "enabled": boolean(),
        "idleMinutes": integer(0),
        "maxTabsPerSession": integer(0),
        "sweepMinutes": integer(1),
    }),
})

HOOKS = obj({
    "enabled": boolean(default=False),
    "path": string(format="hooks-path", default="/hooks"),
    "token": secret(),
    "defaultSessionKey": string(),
    "allowRequestSessionKey": boolean(),
    "allowedSessionKeyPrefixes": STRINGS,
    "allowedAgentIds": STRINGS,
    "maxBodyBytes": integer(1),
    "presets": STRINGS,
    "transformsDir": string(),
    "mappings": array(ANY_OBJECT),
    "gmail": ANY_OBJECT,
    "internal": ANY_OBJECT,
}, checks=("hooks_token",))

MODELS = obj({
    "mode": ANY,
    "providers": mapping(obj({
        "baseUrl": string(),
        "apiKey": secret(),
        "auth": string(),
        "api": string(),
        "headers": ANY_OBJECT,
        "authHeader": boolean(),
        "models": array(ANY),
    })),
    "bedrockDiscovery": ANY_OBJECT,
})

TOOL_POLICY = obj({"allow": STRINGS, "alsoAllow": STRINGS, "deny": STRINGS})
GROUP = obj({
    "requireMention": boolean(),
    "tools": TOOL_POLICY,
    "toolsBySender": mapping(TOOL_POLICY),
    "ingest": boolean(),
    "disableAudioPreflight": boolean(),
    "groupPolicy": enum("allowlist", "open", "disabled"),
    "skills": STRINGS,
    "enabled": boolean(),
    "allowFrom": IDS,
    "systemPrompt": string(),
    "agentId": string(),
    "topics": ANY_OBJECT,
    "errorPolicy": enum("always", "once", "silent"),
    "errorCooldownMs": integer(0),
})

ALLOW_BOTS = union(boolean(), enum("mentions"))
SCOPED_MENTIONS = obj({"mode": enum("allow", "deny"), "allowIn": STRINGS, "denyIn": STRINGS})
MATRIX_ROOM = obj({
    "requireMention": boolean(),
    "autoReply": boolean(),
    "users": IDS,
    "enabled": boolean(),
    "account": string(),
    "allowBots": ALLOW_BOTS,
    "botLoopProtection": ANY_OBJECT,
    "tools": TOOL_POLICY,
    "skills": STRINGS,
    "systemPrompt": string(),
})

DISCORD_CHANNEL_COMMON: dict[str, Spec] = {
    "requireMention": boolean(),
    "tools": TOOL_POLICY,
    "toolsBySender": mapping(TOOL_POLICY),
    "ignoreOtherMentions": boolean(),
    "users": STRINGS,
    "roles": STRINGS,
}

CHANNEL_COMMON: dict[str, Spec | None] = {
    "name": string(),
    "enabled": boolean(),
    "dmPolicy": enum("pairing", "allowlist", "open", "disabled", default="pairing"),
    "allowFrom": IDS,
    "groupPolicy": enum("allowlist", "open", "disabled", default="allowlist"),
    "groupAllowFrom": IDS,
    "groups": mapping(GROUP),
    "mentionPatterns": STRINGS,
    "healthMonitor": obj({"enabled": boolean(default=True)}),
    "heartbeat": obj({"showOk": boolean(), "showAlerts": boolean(), "useIndicator": boolean()}),
    "responsePrefix": string(),
    "historyLimit": integer(0),
    "dmHistoryLimit": integer(0),
    "dms": ANY_OBJECT,
    "direct": ANY_OBJECT,
    "textChunkLimit": integer(1),
    "chunkMode": enum("length", "newline"),
    "streaming": ANY,
    "blockStreaming": ANY,
    "replyToMode": string(),
    "mediaMaxMb": number(0),
    "timeoutSeconds": integer(1),
    "markdown": ANY_OBJECT,
    "commands": ANY_OBJECT,
    "customCommands": array(ANY_OBJECT),
    "configWrites": boolean(),
    "capabilities": ANY,
    "retry": ANY_OBJECT,
    "contextVisibility": string(),
    "ackReaction": string(),
    "reactionNotifications": enum("off", "own", "all"),
    "reactionLevel": string(),
    "errorPolicy": enum("always", "once", "silent"),
    "errorCooldownMs": integer(0),
    "silentErrorReplies": boolean(),
    "actions": ANY_OBJECT,
    "threadBindings": ANY_OBJECT,
    "execApprovals": ANY_OBJECT,
    "defaultTo": union(string(), number()),
}

CHANNEL_SPECIFIC: dict[str, dict[str, Spec | None]] = {
    "telegram": {
        "botToken": secret(),
        "tokenFile": string(),
        "apiBaseUrl": string(format="http-url"),
        "apiRoot": string(format="http-url"),
        "webhookUrl": string(),
        "webhookSecret": secret(),
        "webhookPath": string(),
        "webhookHost": string(),
        "webhookPort": integer(0, 65535),
        "webhookCertPath": string(),
        "proxy": string(),
        "network": ANY_OBJECT,
        "linkPreview": boolean(),
        "pollingStallThresholdMs": integer(30_000, 600_000),
        "trustedLocalFileRoots": STRINGS,
        "autoTopicLabel": ANY,
    },
    "irc": {
        "host": string(),
        "port": PORT,
        "tls": boolean(),
        "nick": string(),
        "username": string(),
        "realname": string(),
        "password": secret(),
        "passwordFile": string(),
        "sasl": obj({"username": string(), "password": secret(), "mechanism": string()}),
        "nickserv": ANY_OBJECT,
        "channels": STRINGS,
    },
    "webchat": {},
    "matrix": {
        "dmPolicy": None,  # Matrix keeps its DM policy under `dm`
        "allowFrom": None,
        "homeserver": string(format="http-url"),
        "network": obj({"dangerouslyAllowPrivateNetwork": boolean()}),
        "proxy": string(),
        "userId": string(),
        "accessToken": secret(),
        "password": secret(),
        "deviceId": string(),
        "deviceName": string(),
        "avatarUrl": string(),
        "initialSyncLimit": integer(0),
        "encryption": boolean(),
        "startupVerification": enum("off", "if-unverified"),
        "startupVerificationCooldownHours": number(0),
        "allowlistOnly": boolean(),
        "dangerouslyAllowNameMatching": boolean(),
        "allowBots": ALLOW_BOTS,
        "botLoopProtection": ANY_OBJECT,
        "mentionPatterns": SCOPED_MENTIONS,
        "threadReplies": enum("off", "inbound", "always"),
        "ackReactionScope": string(),
        "joinIntro": boolean(),
        "autoJoin": enum("always", "allowlist", "off", default="off"),
        "autoJoinAllowlist": IDS,
        "dm": obj({"enabled": boolean(), "policy": enum("pairing", "allowlist", "open", "disabled"),
                   "allowFrom": IDS, "sessionScope": enum("per-user", "per-room"),
                   "threadReplies": enum("off", "inbound", "always")}),
        "groups": mapping(MATRIX_ROOM),
        "rooms": mapping(MATRIX_ROOM),
    },
    "discord": {
        "groups": None,  # Discord's allowlists are `guilds`
        "groupAllowFrom": None,
        "allowFrom": STRINGS,
        "defaultTo": string(),
        "mentionPatterns": SCOPED_MENTIONS,
        "token": secret(),
        "applicationId": string(),
        "activities": ANY_OBJECT,
        "proxy": string(),
        "allowBots": ALLOW_BOTS,
        "botLoopProtection": ANY_OBJECT,
        "dangerouslyAllowNameMatching": boolean(),
        "mentionAliases": mapping(string()),
        "suppressEmbeds": boolean(),
        "maxLinesPerMessage": integer(1),
        "joinIntro": boolean(),
        "heartbeatVisibility": ANY_OBJECT,
        "thread": obj({"inheritParent": boolean()}),
        "dm": obj({"enabled": boolean(), "groupEnabled": boolean(), "groupChannels": STRINGS,
                   "policy": enum("pairing", "allowlist", "open", "disabled"), "allowFrom": STRINGS}),
        "guilds": mapping(obj({**DISCORD_CHANNEL_COMMON, "slug": string(), "reactionNotifications": string(),
                               "presenceEvents": ANY_OBJECT, "channels": mapping(obj({
                                   **DISCORD_CHANNEL_COMMON, "skills": STRINGS, "enabled": boolean(),
                                   "systemPrompt": string(), "includeThreadStarter": boolean(),
                                   "autoThread": boolean(), "autoThreadName": enum("message", "generated"),
                                   "autoArchiveDuration": union(string(), integer())}))})),
        "agentComponents": ANY_OBJECT,
        "slashCommand": ANY_OBJECT,
        "intents": obj({"messageContent": boolean(), "presence": boolean(), "guildMembers": boolean(),
                        "voiceStates": boolean()}),
        "voice": ANY_OBJECT,
        "pluralkit": ANY_OBJECT,
        "ackReactionScope": string(),
        "activity": string(),
        "status": enum("online", "dnd", "idle", "invisible"),
        "autoPresence": ANY_OBJECT,
        "activityType": integer(0, 5),
        "activityUrl": string(),
        "inboundWorker": ANY_OBJECT,
    },
    "slack": {
        "groups": None,  # Slack's allowlist is `channels`
        "groupAllowFrom": None,
        "defaultTo": string(),
        "mentionPatterns": SCOPED_MENTIONS,
        "heartbeatVisibility": ANY_OBJECT,
        "joinIntro": boolean(),
        "postAs": enum("bot", "user"),
        "mode": enum("socket", "http", "relay"),
        "relay": ANY_OBJECT,
        "signingSecret": secret(),
        "webhookPath": string(),
        "botToken": secret(),
        "appToken": secret(),
        "userToken": secret(),
        "userTokenReadOnly": boolean(),
        "allowBots": ALLOW_BOTS,
        "botLoopProtection": ANY_OBJECT,
        "dangerouslyAllowNameMatching": boolean(),
        "requireMention": boolean(),
        "implicitMentions": obj({"replyToBot": boolean(), "quotedBot": boolean(), "threadParticipation": boolean()}),
        "unfurlLinks": boolean(),
        "unfurlMedia": boolean(),
        "reactionAllowlist": IDS,
        "replyToModeByChatType": ANY_OBJECT,
        "thread": ANY_OBJECT,
        "presenceEvents": ANY_OBJECT,
        "slashCommand": ANY_OBJECT,
        "typingReaction": string(),
        "dm": obj({"enabled": boolean(), "groupEnabled": boolean(), "groupChannels": IDS,
                   "policy": enum("pairing", "allowlist", "open", "disabled"), "allowFrom": IDS}),
        "channels": mapping(obj({**{k: v for k, v in DISCORD_CHANNEL_COMMON.items() if k != "roles"},
                                 "skills": STRINGS, "enabled": boolean(),
                                 "systemPrompt": string(), "replyToMode": string(), "allowBots": ALLOW_BOTS,
                                 "botLoopProtection": ANY_OBJECT, "users": IDS, "presenceEvents": ANY_OBJECT})),
    },
}

IMPLEMENTED_CHANNELS: tuple[str, ...] = tuple(CHANNEL_SPECIFIC)


def channel_spec(channel: str) -> Spec:
    """One channel: its account keys at the top (the base account) plus `accounts` of the same shape. A channel
    maps a common key to None when upstream does not have it there."""
    account = {k: v for k, v in {**CHANNEL_COMMON, **CHANNEL_SPECIFIC[channel]}.items() if v is not None}
    return obj({**account, "accounts": mapping(obj(account)), "defaultAccount": string()}, checks=("dm_policy",))


CHANNELS = obj({
    "defaults": obj({
        "groupPolicy": enum("allowlist", "open", "disabled"),
        "heartbeat": ANY_OBJECT,
        "heartbeatVisibility": ANY_OBJECT,
    }),
    **{ch: channel_spec(ch) for ch in IMPLEMENTED_CHANNELS},
}, other="channel")

SECTIONS: dict[str, Spec] = {
    "gateway": GATEWAY,
    "channels": CHANNELS,
    "cron": CRON,
    "agents": AGENTS,
    "browser": BROWSER,
    "logging": LOGGING,
    "hooks": HOOKS,
    "models": MODELS,
    "tools": obj({
        "allow": STRINGS, "deny": STRINGS,
        "exec": obj({"host": enum("auto", "sandbox", "gateway", "node"),
                     "mode": enum("deny", "allowlist", "ask", "auto", "full"),
                     "security": enum("deny", "allowlist", "full"), "ask": enum("off", "on-miss", "always"),
                     "node": string()}, open=True),
    }, open=True),
}

UPSTREAM_SECTIONS = frozenset({
    "$schema", "$include", "meta", "env", "wizard", "diagnostics", "cli", "crestodian", "update", "ui",
    "secrets", "auth", "accessGroups", "acp", "nodeHost", "agent", "security", "bindings",
    "broadcast", "audio", "media", "messages", "commands", "approvals", "session", "transcripts",
    "commitments", "web", "discovery", "talk", "memory", "mcp", "skills", "plugins", "canvasHost",
    "surfaces", "proxy", "routing", "identity", "nodes",
})

SECRET_KEYS = frozenset({"token", "password", "apikey", "bottoken", "secret"})
SECRET_SUFFIXES = ("Token", "Password", "Secret", "ApiKey")


# ---------------------------------------------------------------- the report

@record(frozen=True)
class Issue:
    """One finding: where, why, and (already masked) what was there."""

    path: str
    message: str
    value: str | None = None

    def line(self) -> str:
        got = f" (got {self.value})" if self.value is not None else ""
        return f"  - {self.path or '<root>'}: {self.message}{got}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@record
class ValidationReport:
    errors: list[Issue] = field(default_factory=list)
    notices: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: str, message: str, value: Any = ..., secret: bool = False) -> None:
        self.errors.append(Issue(path, message, None if value is ... else show(value, path, secret)))

    def notice(self, path: str, message: str) -> None:
        self.notices.append(Issue(path, message))

    def format(self, source: str, head: str = "Invalid config at") -> str:
        return "\n".join([f"{head} {source}:", *(i.line() for i in self.errors)])

    def one_line(self) -> str:
        """The errors on one line, for a log record (`config reload skipped (invalid config): ...`)."""
        return "; ".join(i.line().removeprefix("  - ") for i in self.errors)


def is_secret_key(key: str) -> bool:
    """The fallback for secrets the schema does not reach (accepted subtrees, plugins, unknown sections)."""
    return key.lower() in SECRET_KEYS or key.endswith(SECRET_SUFFIXES)


def show(value: Any, path: str = "", secret: bool = False) -> str:
    """A short JSON rendering of a value for an error line, with secrets masked."""
    if secret or (isinstance(value, str) and is_secret_key(path.rsplit(".", 1)[-1])):
        return MASK
    text = json.dumps(_mask(value), ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if isinstance(v, str) and is_secret_key(k) else _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


# ---------------------------------------------------------------- formats and cross-field checks

TIME_RE = re.compile(r"^([01]\d|2[0-3]|24):([0-5]\d)$")


def _duration(v: str) -> str | None:
    return None if is_duration(v) else f"invalid duration ({durations.HINT})"


def _hhmm(v: str, allow_24: bool) -> str | None:
    m = TIME_RE.match(v)
    if not m:
        return 'invalid time (use "HH:MM" 24h format)'
    if m.group(1) == "24" and m.group(2) != "00":
        return "invalid time (24:00 is the only allowed 24:xx value)"
    if m.group(1) == "24" and not allow_24:
        return "invalid time (start cannot be 24:00)"
    return None


def _bind_host(v: str) -> str | None:
    if v in ("0.0.0.0", "localhost", "::", "*"):
        return f'host alias "{v}" is not allowed; use bind=lan (all interfaces) or bind=loopback'
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return "must be an IPv4 address"
    return None


def _url(v: str, schemes: tuple[str, ...]) -> bool:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://[^/\s]+", v)
    return bool(m) and m.group(1).lower() in schemes


def _hooks_path(v: str) -> str | None:
    if not v.startswith("/"):
        return 'must start with "/"'
    return 'must not be "/" (hooks need their own path, e.g. "/hooks")' if v.rstrip("/") == "" else None


def _base_path(value: str) -> str | None:
    """`gateway.controlUi.basePath`: a URL path prefix such as `/openclaw`."""
    if any(c in value for c in "?#\\ \t") or any(p in (".", "..") for p in value.split("/")):
        return 'must be a plain URL path such as "/openclaw" (no "..", "?", "#", spaces or backslashes)'
    return None


FORMATS: dict[str, Callable[[str], str | None]] = {
    "duration": _duration,
    "hhmm": lambda v: _hhmm(v, allow_24=False),
    "hhmm-end": lambda v: _hhmm(v, allow_24=True),
    "bind-host": _bind_host,
    "http-url": lambda v: None if _url(v, ("http", "https")) else "must be an http(s) URL",
    "cdp-url": lambda v: None if _url(v, ("http", "https", "ws", "wss")) else "browser.cdpUrl must be http(s) or ws(s)",
    "hooks-path": _hooks_path,
    "base-path": _base_path,
}


def _check_custom_bind(gw: dict[str, Any], path: str, report: ValidationReport) -> None:
    if gw.get("bind") == "custom" and not gw.get("customBindHost"):
        report.error(f"{path}.customBindHost", "required when gateway.bind is custom")


def _check_browser_profile(p: dict[str, Any], path: str, report: ValidationReport) -> None:
    if p.get("driver") == "existing-session":
        return
    if not (p.get("cdpPort") or p.get("cdpUrl")):
        report.error(path, "Profile must set cdpPort or cdpUrl")
    if p.get("userDataDir"):
        report.error(f"{path}.userDataDir", 'Profile userDataDir is only supported with driver="existing-session"')


def _check_dm_policy(ch: dict[str, Any], path: str, report: ValidationReport) -> None:
    """Upstream's rule: an open DM policy must say so in allowFrom ("*"); an allowlist must not be empty."""
    def check(policy: Any, allow: Any, where: str, label: str, key: str = "dmPolicy") -> None:
        senders = [str(a) for a in allow] if isinstance(allow, list) else []
        if policy == "open" and "*" not in senders:
            report.error(f"{where}.allowFrom", f'{label}.{key}="open" requires {label}.allowFrom to include "*"',
                         allow if allow is not None else ...)
        elif policy == "allowlist" and not senders:
            report.error(f"{where}.allowFrom",
                         f'{label}.{key}="allowlist" requires {label}.allowFrom to contain at least one sender ID',
                         allow if allow is not None else ...)

    def dm(c: dict[str, Any]) -> dict[str, Any]:
        return c["dm"] if isinstance(c.get("dm"), dict) else {}

    if "dmPolicy" in ch or "allowFrom" in ch or not dm(ch):
        check(ch.get("dmPolicy"), ch.get("allowFrom"), path, path)
    else:  # Matrix: `dm.policy` and `dm.allowFrom`
        check(dm(ch).get("policy"), dm(ch).get("allowFrom"), f"{path}.dm", f"{path}.dm", "policy")
    accounts = ch.get("accounts")
    for acct_id, acct in (accounts.items() if isinstance(accounts, dict) else ()):
        if isinstance(acct, dict):
            where = f"{path}.accounts.{acct_id}"
            if dm(acct) or (dm(ch) and "dmPolicy" not in ch):
                merged = {**dm(ch), **dm(acct)}
                check(merged.get("policy"), merged.get("allowFrom"), f"{where}.dm", f"{where}.dm", "policy")
                continue
            check(acct.get("dmPolicy", ch.get("dmPolicy")), acct.get("allowFrom", ch.get("allowFrom")),
                  where, where)


def _check_hooks_token(hooks: dict[str, Any], path: str, report: ValidationReport) -> None:
    if hooks.get("enabled") is True and not hooks.get("token"):
        report.error(f"{path}.token", "hooks.enabled requires hooks.token (set hooks.token to a long random secret)")


CHECKS: dict[str, Callable[[dict[str, Any], str, ValidationReport], None]] = {
    "custom_bind": _check_custom_bind,
    "hooks_token": _check_hooks_token,
    "browser_profile": _check_browser_profile,
    "dm_policy": _check_dm_policy,
}


# ---------------------------------------------------------------- the walker

def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else type(v).__name__


ACCEPTS: dict[str, tuple[str, ...]] = {
    "string": ("string",),
    "integer": ("integer",),
    "number": ("integer", "number"),
    "boolean": ("boolean",),
    "false": ("boolean",),
    "array": ("array",),
    "object": ("object",),
    "map": ("object",),
}

EXPECTED = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "false": "false", "array": "a list", "object": "an object", "map": "an object",
}


def _closest(key: str, known: list[str]) -> str | None:
    import difflib  # only for a config with an unknown key

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(key: str, known: list[str]) -> str:
    close = _closest(key, known)
    return f'; did you mean "{close}"?' if close else ""


def _walk(spec: Spec, value: Any, path: str, report: ValidationReport) -> None:
    kind = spec["type"]
    secret = bool(spec.get("secret"))
    if kind == "any":
        return
    if kind == "union":
        vt = _type_name(value)
        for alt in spec["alts"]:
            if vt in ACCEPTS.get(alt["type"], ()) and (alt["type"] != "false" or value is False):
                _walk({**alt, "secret": secret or alt.get("secret")}, value, path, report)
                return
        wanted = " or ".join(EXPECTED[a["type"]] for a in spec["alts"])
        report.error(path, f"expected {wanted}", value, secret)
        return
    if _type_name(value) not in ACCEPTS[kind] or (kind == "false" and value is not False):
        report.error(path, f"expected {EXPECTED[kind]}", value, secret)
        return
    if kind == "string":
        _string(spec, value, path, report, secret)
    elif kind in ("integer", "number"):
        _number(spec, value, path, report)
    elif kind == "array":
        for i, item in enumerate(value):
            _walk(spec["items"], item, f"{path}[{i}]", report)
    elif kind == "object":
        _object(spec, value, path, report)
    elif kind == "map":
        key_re = spec.get("keys")
        for k, v in value.items():
            if key_re and not re.match(key_re, k):
                report.error(f"{path}.{k}", f"invalid name (must match {key_re})")
            _walk(spec["values"], v, f"{path}.{k}", report)
    for check in spec.get("checks", ()):
        CHECKS[check](value, path, report)


def _string(spec: Spec, value: str, path: str, report: ValidationReport, secret: bool) -> None:
    if spec.get("enum") and value not in spec["enum"]:
        report.error(path, "must be one of " + ", ".join(f'"{e}"' for e in spec["enum"]), value, secret)
    elif spec.get("pattern") and not re.search(spec["pattern"], value):
        report.error(path, f"does not match {spec['pattern']}", value, secret)
    elif spec.get("format"):
        reason = FORMATS[spec["format"]](value)
        if reason:
            report.error(path, reason, value, secret)


def _number(spec: Spec, value: float, path: str, report: ValidationReport) -> None:
    lo, hi = spec.get("min"), spec.get("max")
    if lo is not None and hi is not None and not lo <= value <= hi:
        report.error(path, f"must be between {lo} and {hi}", value)
    elif lo is not None and value < lo:
        report.error(path, f"must be >= {lo}", value)
    elif hi is not None and value > hi:
        report.error(path, f"must be <= {hi}", value)


def _object(spec: Spec, value: dict[str, Any], path: str, report: ValidationReport) -> None:
    fields = spec["fields"]
    for key, v in value.items():
        sub = f"{path}.{key}" if path else key
        if key in fields:
            _walk(fields[key], v, sub, report)
        elif spec.get("other") == "channel":
            hint = _suggest(key, list(fields))
            report.notice(sub, "channel not implemented by openclaw-sup; accepted and ignored" + hint)
        elif not spec.get("open"):
            close = _closest(key, list(fields))
            secret = is_secret_key(key) or (close is not None and (bool(fields[close].get("secret"))
                                                                   or is_secret_key(close)))
            report.error(sub, "unknown key" + (f'; did you mean "{close}"?' if close else ""), v, secret)


def validate(cfg: dict[str, Any]) -> ValidationReport:
    """Check a whole config: errors for what we implement, notices for upstream sections we do not."""
    report = ValidationReport()
    if not isinstance(cfg, dict):
        report.error("", "the top level must be an object", cfg)
        return report
    for key, value in cfg.items():
        if key in SECTIONS:
            _walk(SECTIONS[key], value, key, report)
        elif key in UPSTREAM_SECTIONS:
            report.notice(key, "section not implemented by openclaw-sup; accepted and ignored")
        else:
            hint = _suggest(key, [*SECTIONS, *sorted(UPSTREAM_SECTIONS)])
            report.error(key, "unknown top-level key" + hint, value, is_secret_key(key))
    return report


# ---------------------------------------------------------------- redaction and defaults

def _spec_at(spec: Spec | None, key: str) -> Spec | None:
    if spec is None:
        return None
    if spec["type"] == "object":
        return spec["fields"].get(key)
    if spec["type"] == "map":
        return spec["values"]
    if spec["type"] == "union":
        objs = [a for a in spec["alts"] if a["type"] in ("object", "map")]
        return _spec_at(objs[0], key) if objs else None
    return None


def spec_for_path(path: str) -> Spec | None:
    """The spec of a dotted config path (`gateway.auth.mode`), or None outside the implemented sections."""
    parts = path.split(".")
    spec = SECTIONS.get(parts[0])
    for part in parts[1:]:
        spec = _spec_at(spec, part)
    return spec


def redact(cfg: Any, spec: Spec | None = None, key: str = "") -> Any:
    """A copy with every secret string replaced by upstream's sentinel (schema-marked or by key name)."""
    if isinstance(cfg, str):
        return REDACTED if (spec is not None and spec.get("secret")) or is_secret_key(key) else cfg
    if isinstance(cfg, list):
        items = spec.get("items") if spec and spec["type"] == "array" else None
        return [redact(v, items, key) for v in cfg]
    if isinstance(cfg, dict):
        if spec is None and not key:
            return {k: redact(v, SECTIONS.get(k), k) for k, v in cfg.items()}
        return {k: redact(v, _spec_at(spec, k), k) for k, v in cfg.items()}
    return cfg


def secret_values(cfg: Any) -> list[str]:
    """Every secret string of a config, found by the same rules as `redact` (for log masking)."""
    found: list[str] = []

    def walk(original: Any, masked: Any) -> None:
        if isinstance(original, str) and masked == REDACTED and original != REDACTED:
            found.append(original)
        elif isinstance(original, dict) and isinstance(masked, dict):
            for k, v in original.items():
                walk(v, masked.get(k))
        elif isinstance(original, list) and isinstance(masked, list):
            for a, b in zip(original, masked, strict=False):
                walk(a, b)

    walk(cfg, redact(cfg))
    return found


def spec_for(dotted: str) -> Spec | None:
    """The field spec at a dotted path (map keys match any name), or None when the schema does not reach it."""
    head, *rest = dotted.split(".")
    spec = SECTIONS.get(head)
    for part in rest:
        spec = _spec_at(spec, part)
    return spec


def default_for(dotted: str) -> Any:
    """The documented default of a field (e.g. `gateway.reload.mode` -> "hybrid"), or None."""
    spec = spec_for(dotted)
    return None if spec is None else spec.get("default")
