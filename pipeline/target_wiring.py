"""Building one configured target, without the rest of a run.

Kept apart from ``pipeline.runtime`` so that commands that only talk to a target
(``ferry push``, ``ferry mirror``) do not import the download engine, the metadata
profiles and the zip stage at start-up (about 0.1 s of a push's 0.45 s start)."""

from __future__ import annotations

import sys

from ferry.core.config import Limits, Secret, TargetConfig
from ferry.core.errors import ConfigError
from ferry.core.logs import register_secret
from pipeline.limits import RateLimiter
from upload import targets
from upload.targets.base import RequestLimiter, Target


def make_target(
    tcfg: TargetConfig, limits: Limits, *, token: Secret | None = None, limiter: RequestLimiter | None = None
) -> Target:
    """The target object for a configured target (one module per system, by registry).

    ``token``: the target's token, already read by the caller (``open_run`` reads it once
    per run); None reads it here (a tool building only the target). ``limiter``: the
    request budget (default: this process alone spends the target's whole budget).
    """
    if token is None:
        token = tcfg.token()
    if token is not None:
        register_secret(token.reveal())
    if limiter is None:
        limiter = RateLimiter(tcfg.requests_per_minute, tcfg.requests_per_hour)
    return targets.make_target(tcfg, limits, token=token, limiter=limiter)


def confirm_production(tcfg: TargetConfig, *, yes: bool, dry_run: bool) -> None:
    """A target marked ``production = true`` needs --yes (or a typed confirmation) to write."""
    if not tcfg.production or yes or dry_run:
        return
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"target {tcfg.name!r} ({tcfg.url}) is marked production; write to it? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            return
    raise ConfigError(f"target {tcfg.name!r} is marked production = true: pass --yes to write to it")
