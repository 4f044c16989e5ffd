"""`openclaw-sup models status [--json] [--check] [--agent ID]` and `models auth paste-token --provider P`.

`status` reads the config and the agent's credential store (no gateway needed): the model in use, its
fallbacks, and for each provider they need whether a credential is present and where it comes from, never
the secret itself. `paste-token` reads a token from stdin (or a hidden prompt on a terminal) and stores it as
profile `<provider>:manual` in `<stateDir>/agents/<agentId>/agent/auth-profiles.json` (0600), as upstream.
The running agent worker reads that file on every run: no restart needed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from openclaw_sup.cli.common import fail, profile_paths
from openclaw_sup.config import auth_profiles
from openclaw_sup.config.document import read_config
from openclaw_sup.config.loader import ConfigError
from openclaw_sup.config.models import (
    BUILTIN_PROVIDERS,
    ModelConfigError,
    agent_model,
    aliases,
    credential,
    provider_config,
    split_ref,
)
from openclaw_sup.config.paths import ProfilePaths

models_app = typer.Typer(help="Model providers: which model the agents use and their credentials.",
                         no_args_is_help=True)
auth_app = typer.Typer(help="Model provider credentials.", no_args_is_help=True)
models_app.add_typer(auth_app, name="auth")

AgentOpt = Annotated[str, typer.Option("--agent", help="agent id")]




def _display(path: Path) -> str:
    home = os.environ.get("HOME")
    text = str(path)
    return "~" + text[len(home):] if home and text.startswith(home.rstrip("/") + "/") else text


def status_report(paths: ProfilePaths, agent_id: str = "main") -> dict[str, Any]:
    """What `models status` shows, as data (no secret in it)."""
    try:
        cfg = read_config(paths).data
    except ConfigError as exc:
        fail(str(exc))
    agents = cfg.get("agents") if isinstance(cfg.get("agents"), dict) else {}
    models = cfg.get("models") if isinstance(cfg.get("models"), dict) else {}
    choice = agent_model(agents, agent_id)
    in_use: list[str] = []
    problems: list[str] = []
    resolved: list[str] = []
    for ref in (choice.primary, *choice.fallbacks):
        try:
            provider, model = split_ref(ref, agents)
        except ModelConfigError as exc:
            problems.append(str(exc))
            continue
        resolved.append(f"{provider}/{model}")
        if provider not in in_use:
            in_use.append(provider)
    providers = []
    missing = []
    for provider in dict.fromkeys([*in_use, *sorted((models.get("providers") or {}) if isinstance(
            models.get("providers"), dict) else {})]):
        pcfg = provider_config(models, provider)
        if pcfg is None:
            problems.append(f"unknown model provider {provider!r}: define models.providers.{provider} "
                            f"(baseUrl, api) or use one of {', '.join(sorted(BUILTIN_PROVIDERS))}")
            missing.append(provider)
            continue
        cred = credential(provider, pcfg, paths.state_dir, agent_id)
        needs = bool(pcfg.get("needsKey"))
        if cred is None and needs and provider in in_use:
            missing.append(provider)
            problems.append(f"no credentials for {provider}: run `openclaw-sup models auth paste-token --provider "
                            f"{provider}` or set {auth_profiles.env_var(provider)}")
        providers.append({
            "provider": provider, "inUse": provider in in_use, "api": pcfg.get("api"),
            "baseUrl": pcfg.get("baseUrl") or None,
            "effective": ({"kind": cred[0].split(":", 1)[0], "detail": cred[0], "type": cred[1]} if cred
                          else {"kind": "none" if needs else "not-needed"}),
        })
    if not choice.configured and missing:
        problems.insert(0, "no model configured: set one with `openclaw-sup config set agents.defaults.model "
                           "echo/echo` (offline) or store credentials for the default")
    return {
        "configPath": str(paths.config_path), "agentId": agent_id,
        "agentDir": str(auth_profiles.profiles_path(paths.state_dir, agent_id).parent),
        "defaultModel": choice.primary, "resolvedDefault": resolved[0] if resolved else None,
        "configured": choice.configured, "fallbacks": list(choice.fallbacks), "aliases": aliases(agents),
        "auth": {"storePath": str(auth_profiles.profiles_path(paths.state_dir, agent_id)),
                 "missingProvidersInUse": missing, "providers": providers},
        "ok": not problems, "problems": problems,
    }


@models_app.command("status")
def status_cmd(ctx: typer.Context,
               as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
               check: Annotated[bool, typer.Option("--check", help="exit 1 when a provider in use has no "
                                                                    "credentials")] = False,
               agent: AgentOpt = "main") -> None:
    """Show the model in use and whether its provider has credentials (never the secret)."""
    report = status_report(profile_paths(ctx), agent)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        fallbacks = ", ".join(report["fallbacks"]) or "-"
        default = report["resolvedDefault"] or report["defaultModel"]
        lines = [
            f"Config        : {_display(Path(report['configPath']))}",
            f"Agent dir     : {_display(Path(report['agentDir']))}",
            f"Default       : {default}{'' if report['configured'] else ' (not configured: built-in default)'}",
            f"Fallbacks ({len(report['fallbacks'])}) : {fallbacks}",
            f"Auth store    : {_display(Path(report['auth']['storePath']))}",
            "",
            "Auth overview",
        ]
        for p in report["auth"]["providers"]:
            eff = p["effective"]
            where = {"none": "missing", "not-needed": "not needed"}.get(eff["kind"], eff.get("detail", ""))
            use = " (in use)" if p["inUse"] else ""
            lines.append(f"- {p['provider']}{use}: {where}")
        for problem in report["problems"]:
            lines.append(f"! {problem}")
        typer.echo("\n".join(lines))
    if check and not report["ok"]:
        raise typer.Exit(1)


@auth_app.command("paste-token")
def paste_token_cmd(ctx: typer.Context,
                    provider: Annotated[str, typer.Option("--provider", help="provider id, e.g. anthropic")],
                    profile_id: Annotated[str | None, typer.Option("--profile-id",
                                                                  help="profile id (default <provider>:manual)")]
                    = None,
                    agent: AgentOpt = "main") -> None:
    """Store a provider token (read from stdin, or a hidden prompt) in the agent's auth-profiles.json (0600)."""
    provider = provider.strip().lower()
    if not provider or "/" in provider:
        fail(f"invalid --provider {provider!r}: give a provider id such as anthropic or openai")
    if sys.stdin is not None and sys.stdin.isatty():
        token = typer.prompt(f"Paste token for {provider}", hide_input=True)
    else:
        token = sys.stdin.read() if sys.stdin is not None else ""
    token = token.strip()
    if not token:
        fail("no token given: paste it on stdin (e.g. `pbpaste | openclaw-sup models auth paste-token "
              f"--provider {provider}`) or at the prompt")
    name = auth_profiles.MANUAL
    if profile_id:
        head, sep, tail = profile_id.partition(":")
        if sep and head != provider:
            fail(f"invalid --profile-id {profile_id!r}: it must start with '{provider}:'")
        name = tail if sep else profile_id
    path, pid = auth_profiles.store_token(profile_paths(ctx).state_dir, provider, token, agent, name)
    typer.echo(f"Saved {provider} token as profile {pid} in {_display(path)}")
