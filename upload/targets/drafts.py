"""What the two draft repositories (InvenioRDM / NRP and Zenodo) do alike, written once.

Both keep a record's files in a draft until it is published (then they are locked), verify
files by md5, talk to the server through one ``HttpClient`` configured from their
``[targets.X]`` section, and read records with a GET whose 404 means "gone". ``DraftTarget``
holds that; each system's module keeps its own part: the shape of its records, search,
publish and new versions, and how files travel (InvenioRDM's files API,
``upload.targets.invenio_files``; Zenodo's bucket PUT, ``upload.targets.zenodo_files``),
behind the small ``DraftFiles`` protocol. Messages keep each system's own words
(``Wording``), as they read before this module existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from ferry.core.checksums import Checksum
from ferry.core.config import Secret, TargetConfig
from ferry.core.errors import ConfigError, Conflict, QuotaError, TargetError, TargetNotFound
from ferry.core.retry import RetryPolicy
from upload.targets.base import (
    Abilities,
    NotSupported,
    Progress,
    RemoteFile,
    RemoteRecord,
    RequestLimiter,
    TargetBase,
    TargetLimits,
    Wiring,
)
from upload.targets.http import HttpClient, Where

Option = int | float | bool


class DraftFiles(Protocol):
    """The files of drafts, as one system moves them (one attempt per ``put``)."""

    async def list(self, rec: RemoteRecord) -> dict[str, RemoteFile]: ...

    async def put(
        self, rec: RemoteRecord, key: str, path: Path, size: int, md5: str | None, progress: Progress | None
    ) -> RemoteFile: ...

    async def delete(self, rec: RemoteRecord, key: str) -> None: ...


FilesT = TypeVar("FilesT", bound=DraftFiles)


@dataclass(frozen=True)
class Wording:
    """The words a system's messages use, so that each says what it always said."""

    system: str  # whose md5 rule: "InvenioRDM verifies files by md5"
    target: str  # whose options: "(an InvenioRDM target also takes: ...)"
    record: str  # what a draft is called: "record" or "deposition"
    locked: str  # what publication locks: "files and metadata locked"
    limit: str  # whose per-file limit: "over the target's limit of ..."
    server: str  # who answered a record without an id: "the server answered ..."


def ca_file(config: TargetConfig) -> str | None:
    """``targets.X.ca_file`` as a readable file's path (ConfigError otherwise); None when unset."""
    value = config.options.get("ca_file")
    if value is None:
        return None
    path = Path(str(value)).expanduser() if isinstance(value, str) and value else None
    if path is None or not path.is_file():
        raise ConfigError(f"targets.{config.name}.ca_file must name a readable PEM file, not {value!r}")
    return str(path)


def _check_option(where: str, key: str, value: Any, default: Option) -> None:
    """``value`` must have the kind of ``key``'s default (ConfigError naming the key otherwise)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = number and isinstance(value, int) and value > 0, "a whole number > 0"
    else:
        ok, kind = number and value > 0, "a number > 0"
    if not ok:
        raise ConfigError(f"{where}.{key} must be {kind}, not {value!r}")


def checked_options(
    config: TargetConfig, defaults: Mapping[str, Option], paths: tuple[str, ...], target: str
) -> dict[str, Option]:
    """The section's keys beyond ``TargetConfig``'s own, with ``defaults`` filled in and types
    checked; ``paths`` are taken as they are (read where used). Anything else is refused: a
    misspelt option silently ignored is a setting the user believes in and does not have."""
    where = f"targets.{config.name}"
    unknown = sorted(set(config.options) - set(defaults) - set(paths))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} "
            f"({target} also takes: {', '.join(sorted([*defaults, *paths]))})"
        )
    out = dict(defaults)
    for key, value in config.options.items():
        if key in paths:
            continue
        _check_option(where, key, value, defaults[key])
        out[key] = value
    return out


class DraftTarget(TargetBase, Generic[FilesT]):
    """A draft repository as a ``upload.targets.base.Target``: one HTTP session per instance.

    A subclass gives ``abilities``, ``wording``, ``option_defaults`` (``connections`` and
    ``read_timeout`` among them), ``_record`` (a server answer as a ``RemoteRecord``) and
    ``_set_up``, which sets ``_files``; it may wrap ``_put`` (InvenioRDM repeats whole files)."""

    abilities: Abilities
    wording: ClassVar[Wording]
    option_defaults: ClassVar[Mapping[str, Option]]
    path_options: ClassVar[tuple[str, ...]] = ()
    _files: FilesT

    def __init__(
        self,
        config: TargetConfig,
        *,
        token: Secret | None = None,
        limiter: RequestLimiter | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        """``token``: the target's token as the run read it (once, ``pipeline.runtime.open_run``);
        None reads it from ``config`` here (tests, tools building a target on its own)."""
        if not config.url.startswith(("http://", "https://")):
            raise ConfigError(f"targets.{config.name}.url must be an http(s) URL, not {config.url!r}")
        self.options = checked_options(config, self.option_defaults, self.path_options, self.wording.target)
        self.name = config.name
        self.config = config
        self.limits = TargetLimits(config.max_files_per_record, config.max_file_size, config.max_record_size)
        self.http = HttpClient(
            config.url,
            token if token is not None else config.token(),
            limiter=limiter,
            policy=policy,
            verify_tls=config.verify_tls,
            ca_file=ca_file(config),
            connections=int(self.options["connections"]),
            read_timeout=float(self.options["read_timeout"]),
        )
        self._set_up(config)

    def _set_up(self, config: TargetConfig) -> None:
        """What the system builds on the session and the options (its files, its URLs): one
        hook instead of an ``__init__`` per system repeating this one's signature."""
        raise NotImplementedError

    @classmethod
    def _configured(cls, config: TargetConfig, wiring: Wiring) -> Self:
        return cls(config, token=wiring.token, limiter=wiring.limiter, policy=wiring.policy)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.config.url!r})"

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    # --- records --------------------------------------------------------------------------

    def _record(self, body: Any, recid: str) -> RemoteRecord:
        raise NotImplementedError

    def _answered(self, body: Any, recid: str) -> tuple[Mapping[str, Any], dict[str, str]]:
        """A record answer that has an id (TargetError otherwise), and its links made absolute."""
        if not isinstance(body, Mapping) or not body.get("id"):
            raise TargetError(f"{self.wording.server} answered without a {self.wording.record} id", recid=recid)
        links = {k: self.http.url(v) for k, v in (body.get("links") or {}).items() if isinstance(v, str)}
        return body, links

    async def _read(self, link: str, recid: str, what: str) -> RemoteRecord | None:
        """The record at ``link`` as the server has it now; None when it is gone (404)."""
        try:
            body = (await self.http.request("GET", link, Where(what, recid))).body
        except TargetNotFound:
            return None
        return self._record(body, recid)

    async def _discard_at(self, url: str, rec: RemoteRecord, what: str, expect: tuple[int, ...]) -> None:
        """``ClaimingTarget.discard``'s DELETE: a draft already gone is what was wanted."""
        try:
            await self.http.request("DELETE", url, Where(what, rec.recid), expect=expect)
        except TargetNotFound:
            return

    def _require_draft(self, rec: RemoteRecord, what: str, key: str | None = None) -> None:
        if rec.state != "draft" or "self" not in rec.links:
            raise Conflict(
                f"{what}: {self.wording.record} {rec.id} is published ({self.wording.locked}; make a new version)",
                recid=rec.recid,
                file=key,
            )

    # --- files ----------------------------------------------------------------------------

    async def list_files(self, rec: RemoteRecord) -> dict[str, RemoteFile]:
        return await self._files.list(rec)

    async def put_file(
        self,
        rec: RemoteRecord,
        key: str,
        path: Path,
        size: int,
        expected: Checksum | None,
        progress: Progress | None = None,
    ) -> RemoteFile:
        """What may not be sent is refused before any request: a published record, a hash
        other than md5, a '/' where keys are flat, a file over the per-file limit."""
        self._require_draft(rec, "upload", key)
        if expected is not None and expected.algorithm != "md5":
            raise NotSupported(
                f"{self.wording.system} verifies files by md5, not {expected.algorithm}", recid=rec.recid, file=key
            )
        if not self.abilities.sub_paths and "/" in key:
            raise NotSupported(
                f"{self.wording.system} file names are flat: a key may not hold '/'", recid=rec.recid, file=key
            )
        if size > self.limits.max_file_size:
            raise QuotaError(
                f"{size} bytes is over {self.wording.limit} limit of {self.limits.max_file_size} per file",
                recid=rec.recid,
                file=key,
            )
        md5 = expected.value if expected is not None else None
        return await self._put(rec, key, Path(path), size, md5, progress)

    async def _put(
        self, rec: RemoteRecord, key: str, path: Path, size: int, md5: str | None, progress: Progress | None
    ) -> RemoteFile:
        return await self._files.put(rec, key, path, size, md5, progress)

    async def delete_file(self, rec: RemoteRecord, key: str) -> None:
        self._require_draft(rec, "delete file", key)
        await self._files.delete(rec, key)
