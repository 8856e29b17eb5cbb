"""Source-side fixtures: a real XRootD server and the portal stand-in over generated data.

``sandbox_source`` (session): one ``xrootd`` + portal on 127.0.0.1 serving the generated
test cases (``sandbox.cases.CASES``) and two small DELPHI records (80509, 81045) at a
tiny scale. Everything is stopped at the end of the session.

``served_dir`` (function): an empty dir an ``XRootDServer`` started by a test can serve.

``portal_factory`` (function, async): start an extra portal on the test's own event loop,
e.g. with edited records or with failures injected (``portal.fail_next(2, 503)``), so
tests that break things do not disturb the shared one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.datagen import Scale
from sandbox.portal import Portal, start_portal
from sandbox.stack import Sandbox, run_in_thread, served_tempdir

# Real records served next to the cases: small, with their real paths and file counts.
SOURCE_DELPHI_RECIDS = ("80509", "81045")
TINY = Scale(factor=1e-4, minimum=1024, maximum=256 * 1024)


@dataclass(frozen=True)
class SandboxSource:
    xrootd_url: str  # root://127.0.0.1:PORT
    portal_url: str  # http://127.0.0.1:PORT (record API + /eos/opendata HTTP mirror)
    root: Path  # the served tree: root / "eos/opendata/..."
    records: list[dict[str, Any]]  # fixture format, rewritten to local URIs/sizes/checksums
    records_file: Path  # the same records as a JSON array (for --records)
    cases: dict[str, str]  # case name -> recid (see sandbox/cases.py)

    def record(self, recid_or_case: str) -> dict[str, Any]:
        recid = self.cases.get(recid_or_case, recid_or_case)
        for rec in self.records:
            if str(rec["recid"]) == recid:
                return rec
        raise KeyError(recid_or_case)


@pytest.fixture(scope="session")
def sandbox_source() -> Iterator[SandboxSource]:
    # The served tree lives in its own temp dir (removed at the end), not under pytest's
    # 0700 basetemp, which the unprivileged xrootd user cannot enter.
    with (
        served_tempdir("ferry-test-source-") as workdir,
        run_in_thread(Sandbox(workdir, recids=SOURCE_DELPHI_RECIDS, scale=TINY, with_cases=True)) as sb,
    ):
        yield SandboxSource(
            xrootd_url=sb.xrootd_url,
            portal_url=sb.portal_url,
            root=sb.data_root,
            records=sb.records,
            records_file=sb.records_file,
            cases=dict(sb.cases),
        )


@pytest.fixture
def served_dir() -> Iterator[Path]:
    """An empty directory an xrootd started by the test can serve (removed afterwards)."""
    with served_tempdir("ferry-test-served-") as path:
        yield path


PortalFactory = Callable[..., Awaitable[Portal]]


@pytest.fixture
async def portal_factory(sandbox_source: SandboxSource) -> AsyncIterator[PortalFactory]:
    """``portal = await portal_factory(records=None, data_root=None)``: defaults to the shared records/tree."""
    started: list[Portal] = []

    async def factory(records: list[dict[str, Any]] | None = None, *, data_root: Path | None = None) -> Portal:
        portal = await start_portal(
            records if records is not None else sandbox_source.records,
            data_root=data_root if data_root is not None else sandbox_source.root,
        )
        started.append(portal)
        return portal

    yield factory
    for portal in started:
        await portal.stop()
