"""The local sandbox: XRootD + generated data + portal stand-in, started and stopped together.

``async with Sandbox(workdir, recids=[...]) as sb:`` gives ``sb.xrootd_url``,
``sb.portal_url``, ``sb.records`` (fixture format, rewritten to local URIs),
``sb.records_file`` (the same as a JSON array, for ``ferry download --records``) and
``sb.data_root``. ``run_in_thread`` runs a sandbox on its own event loop in a thread,
for callers that are not async (pytest session fixtures, scripts).

Layout of the workdir::

    WORKDIR/data/eos/opendata/...   the tree xrootd and the portal's HTTP mirror serve
    WORKDIR/records.json            the rewritten records
    WORKDIR/xrootd/                 xrootd config, admin socket, log
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sandbox.cases import CASES, build_cases
from sandbox.datagen import DataGenerator, Scale, mirror_records
from sandbox.portal import Portal, start_portal
from sandbox.repository import RunningRepository, start_repository
from sandbox.xrootd import XRootDError, XRootDServer, check_readable_by, pick_run_user
from sandbox.zenodo import RunningZenodo, start_zenodo

log = logging.getLogger(__name__)

# A handful of small/medium real DELPHI records (conditions database and 1991/1992 data
# sets, ~4.6 GB in reality): at the default scale the demo moves ~90 MB.
DEFAULT_RECIDS: tuple[str, ...] = ("80509", "81045", "81042", "81002", "81008")
DEFAULT_SCALE = Scale(factor=0.02, minimum=1024, maximum=64 * 1024 * 1024)
BUNDLED_RECORDS = Path(__file__).resolve().parent / "delphi_sample_records.json"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cernopendata" / "records"


class SandboxError(RuntimeError):
    """The sandbox could not be set up (unknown recid, unreadable records, server start-up)."""


def records_sources() -> list[Path]:
    """Where fixture records are looked up: $FERRY_FIXTURES, ../shared fixtures, the bundled sample."""
    paths: list[Path] = []
    env = os.environ.get("FERRY_FIXTURES")
    if env:
        paths.append(Path(env))
    if SHARED_FIXTURES.is_dir():
        paths.append(SHARED_FIXTURES)
    paths.append(BUNDLED_RECORDS)
    return paths


def load_records(sources: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Records by recid from JSON array files or directories of them (first source wins)."""
    out: dict[str, dict[str, Any]] = {}
    for src in sources:
        files = sorted(src.glob("*.json")) if src.is_dir() else [src]
        for path in files:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise SandboxError(f"cannot read records from {path}: {exc}") from exc
            if not isinstance(data, list):
                raise SandboxError(f"{path} is not a JSON array of records")
            for rec in data:
                if isinstance(rec, dict) and "recid" in rec:
                    out.setdefault(str(rec["recid"]), rec)
    return out


def select_records(recids: Sequence[str], sources: Iterable[Path] | None = None) -> list[dict[str, Any]]:
    available = load_records(records_sources() if sources is None else sources)
    missing = [r for r in recids if r not in available]
    if missing:
        raise SandboxError(
            f"record(s) {', '.join(missing)} not found in the fixture records "
            f"({', '.join(str(p) for p in (records_sources() if sources is None else sources))})"
        )
    return [available[r] for r in recids]


class Sandbox:
    """XRootD + synthetic data + portal stand-in on 127.0.0.1, as one async context manager."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        recids: Sequence[str] = DEFAULT_RECIDS,
        records: Sequence[dict[str, Any]] | None = None,
        scale: Scale = DEFAULT_SCALE,
        with_cases: bool = False,
        max_files_per_record: int | None = None,
        seed: int = 1,
        portal_port: int = 0,
        xrootd_port: int | None = None,
        with_repository: bool = False,
        repository_port: int = 0,
        repository_options: dict[str, Any] | None = None,
        with_zenodo: bool = False,
        zenodo_options: dict[str, Any] | None = None,
    ) -> None:
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.recids = tuple(str(r) for r in recids)
        self._records_arg = list(records) if records is not None else None
        self.scale = scale
        self.with_cases = with_cases
        self.max_files_per_record = max_files_per_record
        self.seed = seed
        self.portal_port = portal_port
        self.xrootd_port = xrootd_port
        self.with_repository = with_repository
        self.repository_port = repository_port
        self.repository_options = dict(repository_options or {})
        self.repository: RunningRepository | None = None
        self.with_zenodo = with_zenodo
        self.zenodo_options = dict(zenodo_options or {})
        self.zenodo: RunningZenodo | None = None
        self.workdir = Path()
        self.xrootd: XRootDServer | None = None
        self.portal: Portal | None = None
        self.records: list[dict[str, Any]] = []
        self.cases: dict[str, str] = {}
        self._own_workdir = False
        self._served_dir: Path | None = None

    # --- what callers use ------------------------------------------------------------------

    @property
    def data_root(self) -> Path:
        return self._served / "data"

    @property
    def _served(self) -> Path:
        """Where xrootd's files live: the workdir, or a side dir it can reach (see below)."""
        return self._served_dir or self.workdir

    @property
    def records_file(self) -> Path:
        return self.workdir / "records.json"

    @property
    def xrootd_url(self) -> str:
        assert self.xrootd is not None, "sandbox not started"
        return self.xrootd.url

    @property
    def portal_url(self) -> str:
        assert self.portal is not None, "sandbox not started"
        return self.portal.url

    @property
    def repository_url(self) -> str:
        assert self.repository is not None, "sandbox repository not started"
        return self.repository.url

    @property
    def token_file(self) -> Path:
        """The repository's bearer token, in a file (as `token_file` in ferry.toml wants it)."""
        return self.workdir / "repository.token"

    @property
    def zenodo_token_file(self) -> Path:
        """The Zenodo stand-in's token, in a file."""
        return self.workdir / "zenodo.token"

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> Sandbox:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        # Records first: an unknown recid is an input error, whatever the workdir.
        source = self._records_arg if self._records_arg is not None else select_records(self.recids)
        self._prepare_workdir()
        self.xrootd = XRootDServer(self.data_root, port=self.xrootd_port, run_dir=self._served / "xrootd")
        await asyncio.to_thread(self.xrootd.start)
        # Data generation is disk-bound and blocking: a worker thread keeps the loop free.
        self.records = await asyncio.to_thread(self._generate, source, self.xrootd.url)
        text = json.dumps(self.records, indent=1, ensure_ascii=False)
        await asyncio.to_thread(self.records_file.write_text, text)
        self.portal = await start_portal(self.records, data_root=self.data_root, port=self.portal_port)
        if self.with_repository:
            # The sandbox InvenioRDM/NRP repository: state and uploads under the workdir.
            token = secrets.token_urlsafe(24)
            self.repository = await start_repository(
                self.workdir / "repository", port=self.repository_port, tokens=[token], **self.repository_options
            )
            await asyncio.to_thread(_write_private, self.token_file, token)
        if self.with_zenodo:
            # The Zenodo stand-in (deposit + records API): blobs and request log under the workdir.
            zen_token = secrets.token_urlsafe(24)
            self.zenodo = await start_zenodo(self.workdir / "zenodo", tokens=[zen_token], **self.zenodo_options)
            await asyncio.to_thread(_write_private, self.zenodo_token_file, zen_token)
        log.info("sandbox up: xrootd %s, portal %s, %d records", self.xrootd_url, self.portal_url, len(self.records))

    def _generate(self, source: Sequence[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
        gen = DataGenerator(self.data_root, seed=self.seed)
        out = mirror_records(
            source, gen, base_url=base_url, scale=self.scale, max_files_per_record=self.max_files_per_record
        )
        if self.with_cases:
            out.extend(build_cases(gen, base_url))
            self.cases = dict(CASES)
        return out

    def _prepare_workdir(self) -> None:
        if self._workdir_arg is None:
            # World-searchable so the unprivileged xrootd user can enter it.
            self.workdir = Path(tempfile.mkdtemp(prefix="ferry-sandbox-"))
            os.chmod(self.workdir, 0o755)
            self._own_workdir = True
        else:
            self.workdir = self._workdir_arg.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
            try:
                check_readable_by(self.workdir, pick_run_user(), need_list=False)
            except XRootDError:
                # xrootd runs unprivileged and cannot enter this workdir (e.g. under a 0700
                # /root or pytest's temp dir): its data and run files go to a fresh
                # world-searchable temp dir instead, removed when the sandbox stops.
                self._served_dir = Path(tempfile.mkdtemp(prefix="ferry-sandbox-data-"))
                os.chmod(self._served_dir, 0o755)
                log.info("workdir %s is not reachable by xrootd: serving from %s", self.workdir, self._served_dir)
        self.data_root.mkdir(exist_ok=True)
        os.chmod(self.data_root, 0o755)
        check_readable_by(self.data_root, pick_run_user())

    async def stop(self) -> None:
        zenodo, self.zenodo = self.zenodo, None
        if zenodo is not None:
            await zenodo.stop()
        repository, self.repository = self.repository, None
        if repository is not None:
            await repository.stop()
        portal, self.portal = self.portal, None
        if portal is not None:
            await portal.stop()
        xrd, self.xrootd = self.xrootd, None
        if xrd is not None:
            await asyncio.to_thread(xrd.stop)
        if self._own_workdir and self.workdir != Path():
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)
        served, self._served_dir = self._served_dir, None
        if served is not None:
            await asyncio.to_thread(shutil.rmtree, served, True)

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class SandboxThread:
    """Runs a ``Sandbox`` on a private event loop in a daemon thread (for sync callers).

    The portal must live on a loop that keeps running while the caller's own loops come
    and go (pytest gives each test its own), hence a thread rather than the caller's loop.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ferry-sandbox", daemon=True)

    def start(self, timeout: float = 120.0) -> Sandbox:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.sandbox.start(), self._loop).result(timeout)
        except BaseException:
            self._shutdown_loop()
            raise
        return self.sandbox

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the sandbox loop (e.g. ``portal.fail_next``), wait for it."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stop(self, timeout: float = 60.0) -> None:
        try:
            if self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self._loop).result(timeout)
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()


@contextlib.contextmanager
def run_in_thread(sandbox: Sandbox) -> Iterator[Sandbox]:
    """``with run_in_thread(Sandbox(...)) as sb:`` -- started on entry, stopped on exit."""
    runner = SandboxThread(sandbox)
    started = runner.start()
    try:
        yield started
    finally:
        runner.stop()


SANDBOX_TARGET = "sandbox"
ZENODO_TARGET = "zenodo-sandbox"


def config_toml(sb: Sandbox, *, publish: bool = True) -> str:
    """A ferry.toml for this sandbox: its portal as the source, its repository as target."""
    lines = ["[source.cernopendata]", f'portal = "{sb.portal_url}"', ""]
    if sb.repository is not None:
        lines += [
            f"[targets.{SANDBOX_TARGET}]",
            'type = "invenio"',
            f'url = "{sb.repository_url}"',
            f'token_file = "{sb.token_file}"',
            'profile = "nrp-particles"',
            'model = "particles"',
            f"publish = {str(publish).lower()}",
            # The sandbox's limits are the demo's: generous, so a demo is not a wait.
            f"requests_per_minute = {int(sb.repository_options.get('rate_per_minute', 100))}",
            f"requests_per_hour = {int(sb.repository_options.get('rate_per_hour', 5000))}",
            "",
        ]
    if sb.zenodo is not None:
        lines += zenodo_toml(sb, publish=publish)
    return "\n".join(lines)


def zenodo_toml(sb: Sandbox, *, publish: bool = True) -> list[str]:
    """The Zenodo stand-in as a source and as a target (its limits are the ones it runs with)."""
    assert sb.zenodo is not None
    return [
        "[source.zenodo]",
        f'url = "{sb.zenodo.url}"',
        "",
        f"[targets.{ZENODO_TARGET}]",
        'type = "zenodo"',
        f'url = "{sb.zenodo.url}"',
        f'token_file = "{sb.zenodo_token_file}"',
        'profile = "zenodo"',
        f"publish = {str(publish).lower()}",
        f"requests_per_minute = {int(sb.zenodo_options.get('rate_per_minute', 100))}",
        f"requests_per_hour = {int(sb.zenodo_options.get('rate_per_hour', 5000))}",
        "",
    ]


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text + "\n")


@contextlib.contextmanager
def served_tempdir(prefix: str = "ferry-sandbox-") -> Iterator[Path]:
    """A fresh world-searchable temp dir (removed afterwards) that xrootd's user can enter.

    Not under pytest's basetemp: /tmp/pytest-of-<user> is 0700, and every pytest session
    that starts resets it to 0700, so permissions granted there do not hold.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
