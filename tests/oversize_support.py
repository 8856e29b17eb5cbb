"""What the oversize tests (tests/test_oversize*.py) set up alike, written once.

Synthetic records of many small files, served by the sandbox's XRootD server and portal
stand-in (``tests.bulk_support.synthetic_source``); the split record that
tests/test_oversize_split.py and tests/test_oversize_zenodo_part_fails.py both upload
(``many_files``, ``RECID``); the stand-ins started with 10 files per record and their rate
windows wide open; the command lines; what the target was sent and served; how a part
names its index and its siblings.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.bulk_support import BASE, SyntheticSource, make_record, synthetic_source
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_zenodo import ZenodoHandle

MAX_FILES = 10  # files per record the stand-ins hold and the configs say
FILES = 30  # the oversize record's files: three records' worth
SIZE = 2_000  # bytes per file: 60 kB in all
# The split record of the split tests, and a small one (3 files: fits) beside it.
RECID = "995101"
SMALL = "995102"
PARTS = 4  # 30 files, at most 10 per record (a part's record JSON counts): 9, 9, 9, 3
SOURCE_URL = f"https://opendata.cern.ch/record/{RECID}"
# Without the stand-ins' 100 requests/min: a split run passed it and its 429 held the test
# for the rest of the minute (60 s; four parts' requests meet it). Rate limits are tested elsewhere.
OPEN_RATES = {"rate_per_minute": 100_000, "rate_per_hour": 1_000_000}
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

Handle = TypeVar("Handle")


def dat_names(count: int = FILES, stem: str = "m") -> list[str]:
    """The oversize record's file names, in order: m000.dat, m001.dat, ..."""
    return [f"{stem}{j:03d}.dat" for j in range(count)]


@contextlib.contextmanager
def dat_source(names_by_recid: Mapping[str, Iterable[str]]) -> Iterator[SyntheticSource]:
    """The sandbox serving one collision record per recid, of ``SIZE``-byte files with these names."""
    records = [
        make_record(
            recid,
            [
                {"uri": f"root://eospublic.cern.ch/{BASE}/{recid}/{name}", "size": SIZE, "checksum": ""}
                for name in names
            ],
            ["Collision"],
        )
        for recid, names in names_by_recid.items()
    ]
    with synthetic_source(records) as src:
        yield src


@pytest.fixture(scope="module")
def many_files() -> Iterator[SyntheticSource]:
    """The split record (``FILES`` files) beside ``SMALL`` (3 files, s0.dat ... s2.dat)."""
    with dat_source({RECID: dat_names(), SMALL: [f"s{j}.dat" for j in range(3)]}) as src:
        yield src


def small_target(factory: Callable[..., Handle], **limits: Any) -> Handle:
    """A stand-in (sandbox repository or Zenodo) holding ``MAX_FILES`` per record, rates open."""
    return factory(**{"max_files": MAX_FILES, **limits, **OPEN_RATES})


@pytest.fixture
def repo(repository_factory: Callable[..., RepositoryHandle]) -> RepositoryHandle:
    """The sandbox repository holding ``MAX_FILES`` per record, rates open."""
    return small_target(repository_factory)


@pytest.fixture
def zen(zenodo_factory: Callable[..., ZenodoHandle]) -> ZenodoHandle:
    """The Zenodo stand-in holding ``MAX_FILES`` per record, rates open."""
    return small_target(zenodo_factory)


def upload_args(config: Path, recid: str, target: str, dest: Path, *more: str) -> list[str]:
    return ["--config", str(config), "upload", recid, "--target", target, "--dest", str(dest), *more]


def writes(log: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The requests of a request log that may change the target."""
    return [r for r in log if r["method"] in WRITE_METHODS]


def part_index(title: str) -> int:
    """The part's number in its title: "... (part 3 of 4)" -> 3."""
    return int(title.rsplit("(part ", 1)[1].split(" of ")[0])


def relation(i: int, j: int) -> str:
    """How part ``i`` relates to its sibling ``j`` (Zenodo's camelCase; DataCite ids lowercase it)."""
    return "continues" if j == i - 1 else "isContinuedBy" if j == i + 1 else "references"


def zen_config(tmp_path: Path, src: SyntheticSource, zen: ZenodoHandle) -> Path:
    """ferry.toml with target ``zen`` (the Zenodo stand-in), split at 10 files, nothing zipped."""
    token = tmp_path / "zenodo.token"
    token.write_text(zen.token + "\n")
    lines = ["[source.cernopendata]", f'portal = "{src.portal_url}"', "", "[targets.zen]", 'type = "zenodo"']
    lines += [f'url = "{zen.url}"', f'token_file = "{token}"', 'oversize = "split"', "max_files_per_record = 10"]
    lines += ["requests_per_minute = 100000", "requests_per_hour = 1000000"]
    lines += ["", "[limits]", "backoff_base = 0.05", "retries = 3", "zip_small_median_bytes = 0"]
    path = tmp_path / "ferry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def zen_get(zen: ZenodoHandle, path: str) -> Any:
    """What the Zenodo stand-in serves at ``path`` under its API (not what the client believes)."""
    req = urllib.request.Request(f"{zen.api}{path}", headers={"Authorization": f"Bearer {zen.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
