"""Configuration: frozen, validated objects built from defaults -> file -> env -> flags.

Files are TOML, read in this order, each over the one before (tables merge key by key,
a value replaces the one below): the user's ``$XDG_CONFIG_HOME/ferry/ferry.toml``
(default ``~/.config/ferry/ferry.toml``), then ``--config PATH``, else
``$FERRY_CONFIG``, else ``./ferry.toml``. A missing default file is fine, a missing named
file is an error. Secrets are read from files or environment variables when needed, and
never kept in a repr.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ferry.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORTAL = "https://opendata.cern.ch"
DEFAULT_CONFIG_NAME = "ferry.toml"

# Defaults of a [targets.X] section that depend on its type, for keys the file does not
# set: the TargetConfig field defaults are InvenioRDM/NRP's. Zenodo publishes its own
# limits (100 requests/min and 5000/h; 100 files and 50 GB per record) and has its profile.
# Defaults per target type (Zenodo's rate limits and quotas differ from InvenioRDM's),
# applied under the keys a [targets.X] section sets. The target registry declares them
# (``upload.targets``) and installs its lookup here: the core names no target type.
_DEFAULTS_LOOKUP: list[Callable[[str], Mapping[str, Any]]] = []


def set_type_defaults(lookup: Callable[[str], Mapping[str, Any]]) -> None:
    _DEFAULTS_LOOKUP[:] = [lookup]


def _type_defaults(type_name: str) -> Mapping[str, Any]:
    return _DEFAULTS_LOOKUP[0](type_name) if _DEFAULTS_LOOKUP else {}


class Secret:
    """A token whose value never shows in repr, str, logs or stats."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SourceConfig:
    portal: str = DEFAULT_PORTAL
    protocol: str = "root"  # root | https
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in ("root", "https"):
            raise ConfigError(f"source.cernopendata.protocol must be 'root' or 'https', not {self.protocol!r}")
        if not self.portal.startswith(("http://", "https://")):
            raise ConfigError(f"source.cernopendata.portal must be an http(s) URL, not {self.portal!r}")


# What a record larger than its target allows becomes (pipeline/oversize.py decides).
OVERSIZE_MODES = ("bundle", "split", "refuse")


@dataclass(frozen=True)
class TargetConfig:
    name: str
    type: str  # a name of upload.targets.TARGETS: invenio | zenodo | s3 | local
    url: str = ""
    token_file: str | None = None
    token_env: str | None = None
    profile: str = "inveniordm"
    model: str | None = None
    community: str | None = None
    workflow: str | None = None
    publish: bool = False
    production: bool = False
    verify_tls: bool = True
    requests_per_minute: int = 450
    requests_per_hour: int = 4500
    max_files_per_record: int = 100
    max_file_size: int = 10 * 10**9
    max_record_size: int = 10 * 10**9
    multipart_threshold: int = 50 * 1024 * 1024
    part_size: int = 50 * 1024 * 1024
    oversize: str = "bundle"  # a record over the limits: bundle | split | refuse (pipeline/oversize.py)
    options: Mapping[str, Any] = field(default_factory=dict)  # type-specific extras

    def __post_init__(self) -> None:
        # The type is checked against the target registry where the target is made
        # (``upload.targets.make_target``), and each type checks its own url and options.
        if not self.type or not isinstance(self.type, str):
            raise ConfigError(f"targets.{self.name}.type must be a target type name, not {self.type!r}")
        for name in ("requests_per_minute", "requests_per_hour", "max_files_per_record", "part_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"targets.{self.name}.{name} must be positive")
        if self.oversize not in OVERSIZE_MODES:
            raise ConfigError(
                f"targets.{self.name}.oversize must be one of {', '.join(OVERSIZE_MODES)}, not {self.oversize!r}"
            )
        if self.token_file and self.token_env:
            raise ConfigError(
                f"targets.{self.name}: token_file and token_env are both set; keep one "
                "(which token is meant cannot be guessed)"
            )

    @classmethod
    def made(cls, name: str, type: str, url: str, **extra: Any) -> TargetConfig:
        """A target named on the command line (a folder, ``s3://...``), not in a config file:
        its type's defaults apply as they do to a section (S3's request rate, not InvenioRDM's)."""
        known = {f.name for f in fields(cls)}
        defaults = {k: v for k, v in _type_defaults(type).items() if k in known}
        return cls(name=name, type=type, url=url, **{**defaults, **extra})

    def token(self) -> Secret | None:
        """Read the token now (from ``token_env`` first, then ``token_file``).

        Every call reads again: a run reads it once (``pipeline.runtime.open_run``) and passes
        the ``Secret`` along."""
        if self.token_env:
            value = os.environ.get(self.token_env)
            if value:
                return Secret(value.strip())
            if not self.token_file:
                raise ConfigError(f"targets.{self.name}: environment variable {self.token_env} is not set")
        if self.token_file:
            path = Path(self.token_file).expanduser()
            try:
                value = path.read_text(encoding="utf-8").strip()
                mode = path.stat().st_mode
            except OSError as exc:
                raise ConfigError(f"targets.{self.name}: cannot read token_file {path}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"targets.{self.name}: token_file {path} is not UTF-8 text") from exc
            if mode & 0o004:
                log.warning(
                    "targets.%s: token_file %s is readable by other users (mode %o); chmod 600 it",
                    self.name,
                    path,
                    mode & 0o777,
                )
            if not value:
                raise ConfigError(f"targets.{self.name}: token_file {path} is empty")
            return Secret(value)
        return None


@dataclass(frozen=True)
class Limits:
    records_in_flight: int = 8
    downloads: int = 8
    chunks_in_flight: int = 8  # per large file (XRootD reads)
    chunk_size: int = 4 * 1024 * 1024
    zip_workers: int = 2
    uploads: int = 4
    upload_bytes_in_flight: int = 512 * 1024 * 1024
    staging_bytes: int = 50 * 10**9
    retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    zip_threshold: int = 20
    # Also zip records of 5+ files whose median file is smaller than this (0: never).
    zip_small_median_bytes: int = 1024 * 1024
    # A bulk run against a target that stays down stops (cleanly, every unfinished record
    # named) after this many circuit-breaker openings without a success in between.
    breaker_trips: int = 5
    breaker_cool_down: float = 30.0  # seconds the breaker stays open before it probes

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "zip_small_median_bytes" and getattr(self, f.name) == 0:
                continue
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"limits.{f.name} must be positive, not {getattr(self, f.name)!r}")


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    path: Path | None = None  # the last file read (the most specific)
    paths: tuple[Path, ...] = ()  # every file read, lowest first (user config, then project)
    # [source.NAME] sections of other sources (zenodo, ...), as written: each source
    # module checks its own section when it is opened.
    sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def source_section(self, name: str) -> Mapping[str, Any]:
        return self.sources.get(name, {})

    def target(self, name: str) -> TargetConfig:
        try:
            return self.targets[name]
        except KeyError:
            if self.path is None:
                raise ConfigError(
                    f"no target named {name!r}: no config file was read (give --config PATH, set $FERRY_CONFIG "
                    f"or create ./ferry.toml with a [targets.{name}] section)"
                ) from None
            known = ", ".join(sorted(self.targets)) or "none"
            raise ConfigError(f"no target named {name!r} in {self.path} (configured: {known})") from None


def _build(cls: type, section: Mapping[str, Any], where: str, **extra: Any) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown and "options" not in known:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: v for k, v in section.items() if k in known}
    if unknown:
        kwargs["options"] = {k: section[k] for k in unknown}
    for f in fields(cls):
        if f.name in kwargs:
            _check_type(f"{where}.{f.name}", str(f.type), kwargs[f.name])
    try:
        return cls(**kwargs, **extra)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# Field types a config key may have, and what a value of each must be.
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "a whole number"),
    "bool": ((bool,), "true or false"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "str | None": ((str,), "a string"),
}


def _check_type(where: str, kind: str, value: Any) -> None:
    """A key of the wrong type is a ConfigError naming it (``portal = 5``, ``token_file = 42``)."""
    if kind not in _KINDS:
        return
    types, what = _KINDS[kind]
    if not isinstance(value, types) or (isinstance(value, bool) and kind != "bool"):
        raise ConfigError(f"{where} must be {what}, not {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ConfigError(f"{where} is too large: {value} does not fit 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not {value!r}")
    if isinstance(value, str) and "\x00" in value:
        raise ConfigError(f"{where} must not contain a NUL character")


def config_path(explicit: str | None) -> tuple[Path | None, bool]:
    """Which file to read, and whether it must exist."""
    if explicit:
        return Path(explicit).expanduser(), True
    env = os.environ.get("FERRY_CONFIG")
    if env:
        return Path(env).expanduser(), True
    default = Path(DEFAULT_CONFIG_NAME)
    return (default, False) if default.exists() else (None, False)


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/ferry/ferry.toml``, else ``~/.config/ferry/ferry.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base).expanduser() if os.path.isabs(os.path.expanduser(base)) else Path.home() / ".config"
    return root / "ferry" / DEFAULT_CONFIG_NAME


def _read_toml(path: Path, required: bool) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc


def merge_tables(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``: tables merge key by key, any other value replaces."""
    out = dict(low)
    for key, value in high.items():
        below = out.get(key)
        out[key] = merge_tables(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def read_config_files(explicit: str | None = None) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """The merged TOML of the user config and the project config, and the files read."""
    layers = [(user_config_path(), False), config_path(explicit)]
    data: dict[str, Any] = {}
    read: list[Path] = []
    for path, required in layers:
        if path is None:
            continue
        part = _read_toml(path, required)
        if part is not None:
            data = merge_tables(data, part)
            read.append(path)
    return data, tuple(read)


def load_config(explicit: str | None = None) -> Config:
    data, paths = read_config_files(explicit)
    if not paths:
        return Config()
    config = config_from_mapping(data, path=paths[-1])
    return dataclasses.replace(config, paths=paths)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key} must be a table ([{where}{key}]), not {type(value).__name__}")
    return value


def _target_section(targets: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A target's section with its type's defaults under the keys the file sets."""
    section = _table(targets, name, "targets.")
    return {**_type_defaults(str(section.get("type"))), **section}


def config_from_mapping(data: Mapping[str, Any], *, path: Path | None = None) -> Config:
    unknown = sorted(set(data) - {"source", "targets", "limits"})
    if unknown:
        raise ConfigError(f"{path or 'config'}: unknown section(s) {', '.join(unknown)}")
    sections = _table(data, "source", "")
    src = _table(sections, "cernopendata", "source.")
    source = _build(SourceConfig, src, "source.cernopendata")
    others = {str(k): _table(sections, k, "source.") for k in sections if k != "cernopendata"}
    targets = {
        str(name): _build(TargetConfig, _target_section(data["targets"], name), f"targets.{name}", name=str(name))
        for name in _table(data, "targets", "")
    }
    limits = _build(Limits, _table(data, "limits", ""), "limits")
    return Config(source=source, targets=targets, limits=limits, path=path, sources=others)
