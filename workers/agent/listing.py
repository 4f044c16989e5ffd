"""What the agent worker answers about its stores: `sessions.list`, `usage.cost`, and `sessions.summary` (the
per-agent session counts the gateway's `status` shows), in upstream's shapes.

Each agent's store is read by this worker only (it owns them); an agent that has never run has no store and
is listed with no sessions, without creating one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from openclaw_sup.config.models import agent_model, provider_config, split_ref
from openclaw_sup.workers.agent.store import AgentStore, db_path, now_ms
from openclaw_sup.workers.runtime import RequestError

LIST_DEFAULT, LIST_MAX = 100, 1000
SUMMARY_RECENT = 5
PRESENTATION_PARAMS = frozenset({
    "includeDerivedTitles", "includeLastMessage", "includeActivitySummary", "includeGlobal", "includeUnknown",
    "excludeSubagents", "excludeCron", "excludeSystem", "configuredAgentsOnly", "ownerFirst", "includePeople",
})
"""Flags that only shape or narrow rows this gateway never has (subagents, cron runs, global rows): accepted."""
UNSUPPORTED_FILTERS = frozenset({
    "label", "projectId", "workspaceDir", "group", "pinned", "boardFace", "hasBoard", "creatorId", "ownerId",
    "involvingMe", "profileRelation", "spawnedBy", "archived", "requireLastInteraction",
})
ENTRY_FIELDS = (
    "label", "channel", "chatType", "subject", "groupChannel", "space", "origin", "createdVia", "lastInteractionAt",
    "lastActivityAt", "systemSent", "abortedLastRun", "lastRunId", "lastRunError", "inputTokens", "outputTokens",
    "lastChannel", "lastTo", "lastAccountId", "lastThreadId", "deliveryContext", "parentSessionKey",
)
"""Session entry fields upstream's rows carry as stored."""
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TOKEN_FIELDS = ("input", "output", "cacheRead", "cacheWrite")
COST_FIELDS = ("inputCost", "outputCost", "cacheReadCost", "cacheWriteCost")


def _bad(method: str, field: str, why: str) -> RequestError:
    return RequestError("INVALID_REQUEST", f"invalid {method} params: {field} {why}")


def _int(params: dict[str, Any], key: str, method: str, default: int | None, low: int, high: int) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(method, key, f"must be an integer between {low} and {high}")
    return value


class Listing:
    """The read side of the agent stores; `store_of` opens (and keeps) an agent's store."""

    def __init__(self, root: Path, agents_cfg: dict[str, Any], models_cfg: dict[str, Any],
                 store_of: Callable[[str], AgentStore], active: Callable[[str], list[str]]) -> None:
        self.root, self.agents_cfg, self.models_cfg = root, agents_cfg, models_cfg
        self.store_of, self.active = store_of, active

    def agent_ids(self) -> list[str]:
        """Configured agents, and any other that has a store on disk."""
        ids = [str(a["id"]) for a in self.agents_cfg.get("list") or () if isinstance(a, dict) and a.get("id")]
        ids = ids or ["main"]
        agents_dir = self.root / "agents"
        if agents_dir.is_dir():
            ids += sorted(p.name for p in agents_dir.iterdir()
                          if p.name not in ids and db_path(self.root, p.name).exists())
        return ids

    def _sessions(self, agent_id: str) -> list[dict[str, Any]]:
        if not db_path(self.root, agent_id).exists():
            return []
        return self.store_of(agent_id).sessions()

    def _row(self, agent_id: str, s: dict[str, Any]) -> dict[str, Any]:
        runs = self.active(s["key"])
        row = {"key": s["key"], "kind": "group" if ":group:" in s["key"] else "direct", "sessionId": s["sessionId"],
               "agentId": agent_id, "updatedAt": s["updatedAt"], "createdAt": s.get("createdAt"),
               "hasActiveRun": bool(runs), "activeRunIds": runs}
        for key in ("model", "modelProvider"):
            if s.get(key):
                row[key] = s[key]
        entry = s.get("entry") or {}
        row.update({k: entry[k] for k in ENTRY_FIELDS if entry.get(k) is not None})
        return row

    def defaults(self, agent_id: str) -> dict[str, Any]:
        choice = agent_model(self.agents_cfg, agent_id)
        provider, model = split_ref(choice.primary, self.agents_cfg)
        return {"modelProvider": provider, "model": model, "contextTokens": None}

    async def sessions_list(self, params: dict[str, Any]) -> dict[str, Any]:
        method = "sessions.list"
        unsupported = sorted(set(params) & UNSUPPORTED_FILTERS)
        if unsupported:
            raise RequestError("INVALID_REQUEST", f"sessions.list filter {unsupported[0]} is not supported yet")
        limit = _int(params, "limit", method, LIST_DEFAULT, 1, LIST_MAX) or LIST_DEFAULT
        offset = _int(params, "offset", method, 0, 0, 10**9) or 0
        minutes = _int(params, "activeMinutes", method, None, 1, 10**7)
        agent_id = params.get("agentId")
        ids = self.agent_ids()
        if agent_id is not None and (not isinstance(agent_id, str) or agent_id not in ids):
            raise _bad(method, "agentId", f"must be one of {', '.join(ids)}")
        search = params.get("search")
        if search is not None and not isinstance(search, str):
            raise _bad(method, "search", "must be a string")
        sort_by = params.get("sortBy", "updatedAt")
        if sort_by not in ("updatedAt", "lastInteractionAt", "activity"):
            raise _bad(method, "sortBy", "must be updatedAt, lastInteractionAt or activity")
        rows = [self._row(a, s) for a in ([agent_id] if agent_id else ids) for s in self._sessions(a)]
        if minutes is not None:
            rows = [r for r in rows if r["updatedAt"] >= now_ms() - minutes * 60_000]
        if search:
            rows = [r for r in rows if search.lower() in r["key"].lower()]
        if params.get("activeOnly") is True:
            rows = [r for r in rows if r["hasActiveRun"]]
        rows.sort(key=lambda r: (-r["updatedAt"], r["key"]))
        page = rows[offset:offset + limit]
        more = offset + len(page) < len(rows)
        paths = [str(db_path(self.root, a)) for a in ([agent_id] if agent_id else ids)]
        out: dict[str, Any] = {"ts": now_ms(), "path": paths[0] if len(paths) == 1 else "(multiple)",
                               "count": len(page), "totalCount": len(rows), "limitApplied": limit,
                               "nextOffset": offset + len(page) if more else None, "hasMore": more, "owners": [],
                               "defaults": self.defaults(agent_id or ids[0]), "sessions": page}
        if offset:
            out["offset"] = offset
        return out

    async def sessions_summary(self, params: dict[str, Any]) -> dict[str, Any]:
        """For `status`: per agent, its store, session count and newest sessions."""
        by_agent = []
        for agent_id in self.agent_ids():
            rows = [self._row(agent_id, s) for s in self._sessions(agent_id)]
            by_agent.append({"agentId": agent_id, "path": str(db_path(self.root, agent_id)), "count": len(rows),
                             "recent": rows[:SUMMARY_RECENT]})
        return {"byAgent": by_agent, "defaults": self.defaults(self.agent_ids()[0])}

    # -- usage.cost --------------------------------------------------------------------------------------

    def _range(self, params: dict[str, Any]) -> tuple[date, date]:
        method = "usage.cost"
        start, end = params.get("startDate"), params.get("endDate")
        today = datetime.now(UTC).date()
        if start is not None or end is not None:
            for key, value in (("startDate", start), ("endDate", end)):
                if value is not None and (not isinstance(value, str) or not DATE.match(value)):
                    raise _bad(method, key, "must be a date YYYY-MM-DD")
            first = date.fromisoformat(start) if start else today - timedelta(days=29)
            last = date.fromisoformat(end) if end else today
            if last < first:
                raise _bad(method, "endDate", "is before startDate")
            return first, last
        days = _int(params, "days", method, 30, 1, 366) or 30
        return today - timedelta(days=days - 1), today

    def _price(self, model_ref: str | None) -> dict[str, float] | None:
        """USD per million tokens from `models.providers.<p>.models[].cost`, as upstream's config has it."""
        if not model_ref:
            return None
        provider, _, model = model_ref.partition("/")
        for entry in (provider_config(self.models_cfg, provider) or {}).get("models") or ():
            if isinstance(entry, dict) and entry.get("id") == model and isinstance(entry.get("cost"), dict):
                return {k: float(v) for k, v in entry["cost"].items() if isinstance(v, (int, float))}
        return None

    async def usage_cost(self, params: dict[str, Any]) -> dict[str, Any]:
        agent_id, scope = params.get("agentId"), params.get("agentScope")
        if scope not in (None, "all"):
            raise _bad("usage.cost", "agentScope", "must be \"all\"")
        if scope == "all" and agent_id:
            raise RequestError("INVALID_REQUEST", "agentScope=all cannot be combined with agentId")
        ids = self.agent_ids()
        if agent_id is not None and (not isinstance(agent_id, str) or agent_id not in ids):
            raise _bad("usage.cost", "agentId", f"must be one of {', '.join(ids)}")
        first, last = self._range(params)
        since = int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp() * 1000)
        days = {(first + timedelta(days=i)).isoformat(): _zero() for i in range((last - first).days + 1)}
        for a in ids if scope == "all" else [agent_id or ids[0]]:
            if not db_path(self.root, a).exists():
                continue
            for u in self.store_of(a).usage_by_day(since):
                day = days.get(u["date"])
                if day is None:
                    continue
                day["input"] += u["input"]
                day["output"] += u["output"]
                price = self._price(u["model"])
                if price is None:
                    day["missingCostEntries"] += u["calls"]
                else:
                    day["inputCost"] += u["input"] * price.get("input", 0.0) / 1e6
                    day["outputCost"] += u["output"] * price.get("output", 0.0) / 1e6
        daily = [{"date": d, **_totals(v)} for d, v in days.items()]
        return {"updatedAt": now_ms(), "days": len(daily), "daily": daily,
                "totals": _totals({k: sum(d[k] for d in daily) for k in (*TOKEN_FIELDS, *COST_FIELDS,
                                                                          "missingCostEntries")})}


def _zero() -> dict[str, Any]:
    return {**dict.fromkeys(TOKEN_FIELDS, 0), **dict.fromkeys(COST_FIELDS, 0.0), "missingCostEntries": 0}


def _totals(v: dict[str, Any]) -> dict[str, Any]:
    out = {k: v[k] for k in TOKEN_FIELDS}
    out["totalTokens"] = sum(v[k] for k in TOKEN_FIELDS)
    costs = {k: round(v[k], 6) for k in COST_FIELDS}
    return {**out, "totalCost": round(sum(costs.values()), 6), **costs, "missingCostEntries": v["missingCostEntries"]}
