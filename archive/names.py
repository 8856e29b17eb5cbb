"""Names in an archive (NAME, REV, ``NAME/REV``) and what ARCHIVE on the command line
resolves to. Kept apart from ``archive.store`` and free of the targets' imports: the
re-run of a complete download (``archive.rerun``) needs these and no S3 client."""

from __future__ import annotations

import os

import orjson

from ferry.core.config import Config, TargetConfig
from ferry.core.errors import InputError

# URL scheme -> target type and options, for ARCHIVE given as a URL rather than a
# configured name: the layout that puts ARCHIVE/NAME/REV/<path> where djarchive puts it.
SCHEMES: dict[str, tuple[str, dict[str, str]]] = {"s3": ("s3", {"layout": "archive"}), "file": ("local", {})}
# Where an S3 target's server is, when the config does not say: botocore reads these.
_S3_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def check_name(kind: str, value: str) -> str:
    """NAME and REV are one path component each: no '/', '..', empty or control characters."""
    if not value or value in (".", ".."):
        raise InputError(f"{kind} {value!r} must be a name (not empty, '.' or '..')")
    if "/" in value or "\\" in value:
        raise InputError(f"{kind} {value!r} must not contain a slash")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{kind} {value!r} must not contain control characters")
    if value == ".ferry":
        raise InputError(f"{kind} {value!r} is reserved for ferry's own state")
    return value


def revision_id(name: str, rev: str) -> str:
    return f"{check_name('dataset name', name)}/{check_name('revision', rev)}"


def target_config(spec: str, config: Config) -> TargetConfig:
    if spec in config.targets:
        return config.target(spec)
    scheme, sep, _ = spec.partition("://")
    if sep:
        if scheme not in SCHEMES:
            known = ", ".join(f"{s}://" for s in SCHEMES)
            raise InputError(f"archive {spec!r}: unknown scheme {scheme!r} (known: {known}, or a configured target)")
        kind, options = SCHEMES[scheme]
        return TargetConfig.made(spec, kind, spec, options=options)
    return TargetConfig.made(spec, "local", spec)


def archive_key(spec: str, config: Config) -> str:
    """What names the archive ``spec`` stands for in a completion marker: its type, URL
    and options (a configured name pointed elsewhere is another archive), and for S3 the
    endpoint from the environment (the same bucket on another server is, too). A local
    folder is named by its absolute path (the same relative path from elsewhere is not)."""
    tcfg = target_config(spec, config)
    url = tcfg.url
    if tcfg.type == "local" and "://" not in url:
        url = os.path.abspath(url)
    env = {k: os.environ.get(k, "") for k in _S3_ENDPOINT_ENV} if tcfg.type == "s3" else {}
    options = {str(k): str(v) for k, v in tcfg.options.items()}
    return orjson.dumps([tcfg.type, url, options, env], option=orjson.OPT_SORT_KEYS).decode()
