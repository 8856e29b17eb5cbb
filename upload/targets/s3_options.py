"""The ``[targets.NAME]`` options of an S3 target, checked once (unknown or mistyped keys
are ConfigErrors naming ``targets.NAME.key``)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Literal

from ferry.core.config import TargetConfig
from ferry.core.errors import ConfigError
from upload.targets.s3_budget import DEFAULT_BUDGET
from upload.targets.s3_client import S3Location, S3Settings
from upload.targets.s3_upload import MIN_PART, MiB

log = logging.getLogger(__name__)

Layout = Literal["versioned", "plain", "archive"]

_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "endpoint_url": str,
    "region": str,
    "aws_profile": str,
    "credentials_file": str,
    "layout": str,
    "parts_in_flight": int,
    "bytes_in_flight": int,
    "connections": int,
    "read_timeout": (int, float),
    "connect_timeout": (int, float),
    "attempts": int,
    "addressing_style": str,
    "verify_etag": bool,
}
_DEFAULT_PROFILE = next(f.default for f in dataclasses.fields(TargetConfig) if f.name == "profile")


@dataclasses.dataclass(frozen=True)
class S3Options:
    location: S3Location
    settings: S3Settings
    layout: Layout = "versioned"
    multipart_threshold: int = 50 * 1024 * 1024
    part_size: int = 50 * 1024 * 1024
    parts_in_flight: int = 4
    # Part bytes held at once by all uploads of a run together (upload/targets/s3_budget.py).
    bytes_in_flight: int = DEFAULT_BUDGET
    verify_etag: bool = True  # single-PUT ETag == md5 and multipart ETag == md5-of-md5s-N

    @classmethod
    def from_config(cls, config: TargetConfig) -> S3Options:
        where = f"targets.{config.name}"
        opts = dict(config.options)
        for name, value in opts.items():
            want = _OPTIONS.get(name)
            if want is None:
                raise ConfigError(f"{where}.{name}: unknown option for an s3 target (known: {', '.join(_OPTIONS)})")
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{where}.{name} has the wrong type: {value!r}")
        layout = opts.get("layout", "versioned")
        if layout not in ("versioned", "plain", "archive"):
            raise ConfigError(f"{where}.layout must be 'versioned', 'plain' or 'archive', not {layout!r}")
        style = opts.get("addressing_style", "auto")
        if style not in ("auto", "path", "virtual"):
            raise ConfigError(f"{where}.addressing_style must be auto, path or virtual, not {style!r}")
        # `profile` is the metadata profile for other targets; S3 has none, so there it
        # names the AWS profile, as in the AWS CLI (aws_profile says the same explicitly).
        aws_profile = opts.get("aws_profile") or (config.profile if config.profile != _DEFAULT_PROFILE else None)
        settings = S3Settings(
            endpoint_url=opts.get("endpoint_url"),
            profile=aws_profile,
            credentials_file=os.path.expanduser(opts["credentials_file"]) if opts.get("credentials_file") else None,
            region=opts.get("region"),
            connections=int(opts.get("connections", 16)),
            connect_timeout=float(opts.get("connect_timeout", 10.0)),
            read_timeout=float(opts.get("read_timeout", 300.0)),
            attempts=int(opts.get("attempts", 3)),
            addressing_style=style,
        )
        parts_in_flight = int(opts.get("parts_in_flight", 4))
        budget = _positive(opts.get("bytes_in_flight", DEFAULT_BUDGET), f"{where}.bytes_in_flight")
        return cls(
            location=S3Location.parse(config.url, where=f"{where}.url"),
            settings=settings,
            layout=layout,
            multipart_threshold=config.multipart_threshold,
            part_size=fitted_part_size(config.part_size, parts_in_flight, budget, where),
            parts_in_flight=parts_in_flight,
            bytes_in_flight=budget,
            verify_etag=bool(opts.get("verify_etag", True)),
        )


def fitted_part_size(part_size: int, parts_in_flight: int, budget: int, where: str) -> int:
    """``part_size``, made smaller (not below S3's 5 MiB) when ``parts_in_flight`` parts of
    it do not fit in the byte budget: 50 MiB parts in a 96 MiB budget left one part in
    flight, so a large file went up one part at a time, the connection idle while the next
    part was read and hashed (measured: 4.7 s of a 6 s push of 256 MiB spent waiting)."""
    fitted = max(MIN_PART, budget // max(1, parts_in_flight))
    if fitted >= part_size:
        return part_size
    log.info(
        "%s: parts of %d MiB so that %d fit in bytes_in_flight (%d MiB); part_size was %d MiB",
        where,
        fitted // MiB,
        parts_in_flight,
        budget // MiB,
        part_size // MiB,
    )
    return fitted


def _positive(value: int, where: str) -> int:
    if value < 1:
        raise ConfigError(f"{where} must be a positive number of bytes, not {value}")
    return value
