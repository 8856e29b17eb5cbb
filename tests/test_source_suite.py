"""Every source joins the source conformance suite (ferry/testing/source_suite.py):
the portal API over XRootD, a records file, a master cache, a local folder, Zenodo."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from download.sources.cache import CacheBuilder, MasterCache
from download.sources.cernopendata import PortalSource, RecordsFileSource
from download.sources.local import LocalSource
from download.sources.zenodo import ZenodoSource
from download.transport import Transport
from ferry.core.model import Record
from ferry.testing.source_suite import LIMITS, SourceBackend, SourceSuite
from tests.fixtures_xrootd import SandboxSource
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_zenodo_source import payload, publish

CASES = "eos/opendata/sandbox/cases"


def served(src: SandboxSource, folder: str) -> dict[str, int]:
    """key -> size of the data files the sandbox serves under a case's folder."""
    return {p.name: p.stat().st_size for p in (src.root / CASES / folder).iterdir() if p.is_file()}


class TestPortal(SourceSuite):
    @pytest.fixture
    def backend(self, sandbox_source: SandboxSource) -> SourceBackend:
        src = sandbox_source
        return SourceBackend(
            "portal",
            lambda: PortalSource(src.portal_url),
            known=src.cases["plain"],
            files=served(src, "plain"),
            unknown="424242",
            spec=src.cases["plain"],
            registry="cernopendata",
            broken=src.cases["bad_checksum"],
            broken_file="bad.dat",
        )


class TestRecordsFile(SourceSuite):
    @pytest.fixture
    async def backend(self, sandbox_source: SandboxSource) -> AsyncIterator[SourceBackend]:
        # The "index" case: its data files are listed only in index files, which the source
        # fetches (checksum verified) through the transport and expands.
        src = sandbox_source
        transport = Transport.create("root", limits=LIMITS)
        yield SourceBackend(
            "records-file",
            lambda: RecordsFileSource([src.records_file], read_index=transport.read_index),
            known=src.cases["index"],
            files=served(src, "index/data"),
            unknown="424242",
            spec=src.cases["index"],
            registry="cernopendata",
            broken=src.cases["missing_file"],
            broken_file="gone.dat",
        )
        await transport.close()


class TestMasterCache(SourceSuite):
    @pytest.fixture
    async def backend(self, sandbox_source: SandboxSource, tmp_path: Path) -> AsyncIterator[SourceBackend]:
        # A master cache built from the portal (as `ferry cache build` does), then read as
        # `--records CACHE.json` / `ferry bulk --cache` read it: no request at resolve time.
        src = sandbox_source
        portal = PortalSource(src.portal_url)
        builder = CacheBuilder(MasterCache(path=tmp_path / "cache.json"))
        await builder.add_recids([src.cases["plain"], src.cases["bad_checksum"]], portal.resolve)
        await portal.close()
        path = builder.save()
        yield SourceBackend(
            "master-cache",
            lambda: RecordsFileSource([path]),
            known=src.cases["plain"],
            files=served(src, "plain"),
            unknown="424242",
            spec=src.cases["plain"],
            registry="cernopendata",
            broken=src.cases["bad_checksum"],
            broken_file="bad.dat",
        )


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


class TestLocalFolder(SourceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> SourceBackend:
        files = {"a.txt": b"alpha\n", "sub dir/b.bin": payload(300_000), "empty": b""}
        good = _folder(tmp_path / "ds", files)
        bad = _folder(tmp_path / "bad", {"ok.txt": b"fine", "edited.bin": payload(5000)})

        def spoil(record: Record) -> None:
            # Edited between the listing and the copy, size and mtime kept (a silent edit,
            # bit rot): the download must not accept the bytes the record did not list.
            path = bad / "edited.bin"
            before = path.stat()
            with path.open("r+b") as fh:
                fh.seek(100)
                fh.write(b"X")
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

        return SourceBackend(
            "dir",
            LocalSource,
            known=str(good),
            files={k: len(v) for k, v in files.items()},
            unknown=str(tmp_path / "nope"),
            spec=f"dir:{good}",
            registry="dir",
            broken=str(bad),
            broken_file="edited.bin",
            spoil=spoil,
        )


class TestZenodo(SourceSuite):
    @pytest.fixture
    def backend(self, zenodo: ZenodoHandle) -> SourceBackend:
        files = {"events.root": payload(250_000), "README.txt": b"hello\n"}
        rec = publish(zenodo, files)
        bad = publish(zenodo, {"good.bin": payload(9000), "bad.bin": payload(7000, seed=3)})
        zenodo.corrupt(bad["id"], "bad.bin", offset=10)
        return SourceBackend(
            "zenodo",
            lambda: ZenodoSource(zenodo.url),
            known=f"zenodo:{rec['id']}",
            files={k: len(v) for k, v in files.items()},
            unknown="zenodo:987654321",
            transport=lambda: Transport.create("https", https_base=zenodo.url, limits=LIMITS),
            spec=f"zenodo:{rec['id']}",
            registry="zenodo",
            broken=f"zenodo:{bad['id']}",
            broken_file="bad.bin",
        )
