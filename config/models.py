"""Which model an agent uses and with which credential, from upstream's config shape.

`agents.defaults.model` (or an `agents.list[]` entry's `model`) is a `"provider/model"` ref or `{primary,
fallbacks}`; `agents.defaults.models` may give refs an `alias`. `models.providers.<id>.{baseUrl, apiKey, api,
headers}` adds or overrides providers. Credentials, first found wins: the agent's auth profiles
(`models auth paste-token`), the provider's env var (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `<ID>_API_KEY`),
then `models.providers.<id>.apiKey`. Shared by the agent worker and `openclaw-sup models status`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from openclaw_sup.config import auth_profiles
from openclaw_sup.config.record import record

DEFAULT_MODEL = "anthropic/claude-opus-4-6"
DEFAULT_PROVIDER = "anthropic"
OPENCLAW_MODEL_IDS = ("openclaw", "openclaw-default")

BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "openai": {"baseUrl": "https://api.openai.com/v1", "api": "openai-completions", "needsKey": True},
    "anthropic": {"baseUrl": "https://api.anthropic.com", "api": "anthropic-messages", "needsKey": True},
    "ollama": {"baseUrl": "http://127.0.0.1:11434/v1", "api": "openai-completions", "needsKey": False},
    "vllm": {"baseUrl": "http://127.0.0.1:8000/v1", "api": "openai-completions", "needsKey": False},
    "echo": {"baseUrl": "", "api": "echo", "needsKey": False},
}


class ModelConfigError(Exception):
    """A model that cannot be used as configured; `code` is INVALID_REQUEST or UNAVAILABLE."""

    def __init__(self, message: str, code: str = "INVALID_REQUEST") -> None:
        super().__init__(message)
        self.code = code


@record(frozen=True)
class Target:
    """A resolved model: which provider, where, with which credential (never in `repr`)."""

    provider: str
    model: str
    api: str
    base_url: str = ""
    api_key: str | None = field(default=None, repr=False)
    key_type: str = "api_key"
    key_source: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.model}"

    def where(self) -> str:
        return f"{self.provider} ({self.base_url})" if self.base_url else self.provider


@record(frozen=True)
class ModelChoice:
    primary: str
    fallbacks: tuple[str, ...] = ()
    configured: bool = True


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _agent_entry(agents: dict[str, Any], agent_id: str) -> dict[str, Any]:
    for entry in agents.get("list") or ():
        if isinstance(entry, dict) and entry.get("id") == agent_id:
            return entry
    return {}


def _choice(value: Any) -> ModelChoice | None:
    if isinstance(value, str) and value.strip():
        return ModelChoice(value.strip())
    if isinstance(value, dict) and isinstance(value.get("primary"), str) and value["primary"].strip():
        fallbacks = tuple(f for f in value.get("fallbacks") or () if isinstance(f, str) and f.strip())
        return ModelChoice(value["primary"].strip(), fallbacks)
    return None


def agent_model(agents: Mapping[str, Any] | None, agent_id: str = "main") -> ModelChoice:
    """The agent's model: its `agents.list[]` entry, else `agents.defaults.model`, else upstream's default."""
    agents = _dict(agents)
    own = _choice(_agent_entry(agents, agent_id).get("model"))
    if own is not None:
        return own
    default = _choice(_dict(agents.get("defaults")).get("model"))
    return default or ModelChoice(DEFAULT_MODEL, configured=False)


def max_concurrent(agents: Mapping[str, Any] | None) -> int:
    """Upstream's `agents.defaults.maxConcurrent`: agent runs at once across sessions (each session's still one at
    a time); unset, upstream's default of `max(8, 4 per available CPU)`."""
    value = _dict(_dict(agents).get("defaults")).get("maxConcurrent")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return max(8, 4 * len(os.sched_getaffinity(0)))


def aliases(agents: Mapping[str, Any] | None) -> dict[str, str]:
    models = _dict(_dict(_dict(agents).get("defaults")).get("models"))
    return {str(v["alias"]): ref for ref, v in models.items()
            if isinstance(v, dict) and isinstance(v.get("alias"), str)}


def split_ref(ref: str, agents: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """`"provider/model"` -> its parts; a bare name is an alias or an `anthropic` model (as upstream)."""
    ref = ref.strip()
    ref = aliases(agents).get(ref, ref)
    provider, sep, model = ref.partition("/")
    if not sep:
        return DEFAULT_PROVIDER, ref
    if not provider or not model:
        raise ModelConfigError(f"invalid model ref {ref!r}: expected \"provider/model\" (e.g. openai/gpt-4o-mini "
                               "or echo/echo)")
    return provider.strip().lower(), model.strip()


def _secret_value(value: Any, env: Mapping[str, str]) -> str | None:
    """A config secret: a plain string, or a SecretRef `{source: env|file, id}`."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        source, ident = value.get("source"), str(value.get("id") or "")
        if source == "env":
            return env.get(ident) or None
        if source == "file" and ident:
            try:
                return Path(ident).expanduser().read_text().strip() or None
            except OSError:
                return None
    return None


def credential(provider: str, provider_cfg: Mapping[str, Any], state_dir: Path, agent_id: str = "main",
               env: Mapping[str, str] | None = None) -> tuple[str, str, str] | None:
    """`(source, type, secret)` for a provider, or None. `source` says where it came from, never the secret."""
    env = os.environ if env is None else env
    found = auth_profiles.find(state_dir, provider, agent_id)
    if found is not None:
        pid, kind, secret = found
        return f"auth-profiles:{pid}", kind, secret
    var = auth_profiles.env_var(provider)
    if env.get(var):
        return f"env:{var}", "api_key", env[var]
    secret = _secret_value(provider_cfg.get("apiKey"), env)
    if secret:
        return f"config:models.providers.{provider}.apiKey", "api_key", secret
    return None


def provider_config(models: Mapping[str, Any] | None, provider: str) -> dict[str, Any] | None:
    """Built-in defaults overlaid with `models.providers.<id>`; None for a provider nobody defined."""
    own = _dict(_dict(_dict(models).get("providers")).get(provider))
    base = BUILTIN_PROVIDERS.get(provider)
    if base is None and not own:
        return None
    merged = {**(base or {"api": "openai-completions", "needsKey": False}), **own}
    return merged


def known_providers(models: Mapping[str, Any] | None) -> list[str]:
    return sorted({*BUILTIN_PROVIDERS, *_dict(_dict(models).get("providers"))})


def resolve(ref: str, *, agents: Mapping[str, Any] | None, models: Mapping[str, Any] | None, state_dir: Path,
            agent_id: str = "main", env: Mapping[str, str] | None = None, configured: bool = True) -> Target:
    """A model ref -> a Target ready to call; raises ModelConfigError naming the fix."""
    provider, model = split_ref(ref, agents)
    cfg = provider_config(models, provider)
    if cfg is None:
        raise ModelConfigError(
            f"unknown model provider {provider!r} (model {ref!r}): define models.providers.{provider} "
            f"(baseUrl, api) or use one of {', '.join(known_providers(models))}")
    cred = credential(provider, cfg, state_dir, agent_id, env)
    if cred is None and cfg.get("needsKey"):
        if not configured:
            raise ModelConfigError(
                f"no model configured and no credentials for the default {ref}: run `openclaw-sup models auth "
                f"paste-token --provider {provider}` (or set {auth_profiles.env_var(provider)}), or choose a model "
                "with `openclaw-sup config set agents.defaults.model echo/echo` (offline)", code="UNAVAILABLE")
        raise ModelConfigError(
            f"no credentials for model provider {provider} (model {provider}/{model}): run `openclaw-sup models "
            f"auth paste-token --provider {provider}` or set {auth_profiles.env_var(provider)}", code="UNAVAILABLE")
    headers = {str(k): str(v) for k, v in _dict(cfg.get("headers")).items()}
    base_url = str(cfg.get("baseUrl") or "")
    if cfg.get("api") != "echo" and not base_url:
        raise ModelConfigError(f"model provider {provider} has no baseUrl: set models.providers.{provider}.baseUrl")
    return Target(provider, model, str(cfg.get("api") or "openai-completions"), base_url,
                  cred[2] if cred else None, cred[1] if cred else "api_key", cred[0] if cred else None, headers)
