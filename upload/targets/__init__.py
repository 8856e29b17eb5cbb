"""Targets: where records go. Each system is one module behind ``upload.targets.base``.

A system joins with one registry line: its ``type`` name and ``module:Class``, where the
class has ``from_config(config, limits, *, limiter, token) -> Target``. Nothing else in
dataferry names a target type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ferry.core.config import set_type_defaults
from ferry.core.registry import Registry

if TYPE_CHECKING:
    from ferry.core.config import Limits, Secret, TargetConfig
    from upload.targets.base import RequestLimiter, Target


class TargetFactory(Protocol):
    def from_config(
        self,
        config: TargetConfig,
        limits: Limits | None = None,
        *,
        limiter: RequestLimiter | None,
        token: Secret | None,
    ) -> Target: ...


TARGETS: Registry[TargetFactory] = Registry("target type")
TARGETS.register("invenio", "upload.targets.invenio:InvenioTarget")
# Zenodo's documented limits: 100 requests/min and 5000/h, 100 files and 50 GB per deposition.
ZENODO_DEFAULTS = {
    "profile": "zenodo",
    "requests_per_minute": 100,
    "requests_per_hour": 5000,
    "max_files_per_record": 100,
    "max_file_size": 50 * 10**9,
    "max_record_size": 50 * 10**9,
}
TARGETS.register("zenodo", "upload.targets.zenodo:ZenodoTarget", defaults=ZENODO_DEFAULTS)
# AWS's documented request rate per prefix (3,500 writes a second; reads may go to 5,500):
# an s3 section's default budget. A lower one is applied to every request (upload.targets.s3).
S3_DEFAULTS = {"requests_per_minute": 3500 * 60, "requests_per_hour": 3500 * 3600}
TARGETS.register("s3", "upload.targets.s3:S3Target", hint="pip install 'dataferry[s3]'", defaults=S3_DEFAULTS)
TARGETS.register("local", "upload.targets.local:LocalTarget")
set_type_defaults(TARGETS.defaults)  # config sections get their type's defaults at load


def make_target(
    config: TargetConfig, limits: Limits, *, token: Secret | None, limiter: RequestLimiter | None
) -> Target:
    """The target object for a configured target, from the registry."""
    factory = TARGETS.get(config.type, where=f"targets.{config.name}.type")
    return factory.from_config(config, limits, limiter=limiter, token=token)
