"""Records larger than the target allows (issue 14 section 4): a plan before any write.

The pure plan (pipeline/oversize.py) for each mode, then through ``ferry upload`` /
``ferry bulk`` against the sandbox repository started with small limits, over a synthetic
record of many files served by the sandbox's XRootD server and portal stand-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from ferry.core.config import TargetConfig
from ferry.core.errors import ConfigError
from pipeline.ledger import Ledger
from pipeline.oversize import part_key, plan_oversize, split_parts
from tests.bulk_support import SyntheticSource, bulk_args, write_config, write_recids
from tests.fixtures_repository import RepositoryHandle
from tests.oversize_support import FILES, MAX_FILES, SIZE, dat_names, dat_source, small_target, upload_args, writes
from upload.targets.base import TargetLimits

RECID = "995001"


def _files(n: int, size: int) -> list[tuple[str, int]]:
    return [(f"f{i:03d}.dat", size) for i in range(n)]


ZENODO = TargetLimits(max_files=100, max_file_size=50 * 10**9, max_record_size=50 * 10**9)


def test_within_the_limits_fits() -> None:
    assert plan_oversize(_files(100, 10**6), ZENODO, "bundle", key="1").action == "fits"


def test_many_small_files_are_bundled_within_the_per_file_limit() -> None:
    plan = plan_oversize(_files(429, 10**6), ZENODO, "bundle", key="1")
    assert plan.action == "bundle" and "429 files > the target's limit of 100 files" in plan.reason
    assert "1 zip bundle(s)" in plan.reason


def test_a_cms_sized_record_is_refused_by_bundle_with_the_numbers() -> None:
    # 429 files, 2.06 TB (the CMS primary dataset) on Zenodo: 100 files / 50 GB.
    files = _files(429, 2_060_000_000_000 // 429)
    plan = plan_oversize(files, ZENODO, "bundle", key="1")
    assert plan.action == "refuse"
    assert "per record" in plan.reason and "50000000000 bytes" in plan.reason
    assert 'oversize = "split" would make' in plan.reason
    assert plan_oversize(files, ZENODO, "refuse", key="1").action == "refuse"


def test_split_parts_are_within_the_limits_and_stable() -> None:
    files = _files(429, 2_060_000_000_000 // 429)
    plan = plan_oversize(files, ZENODO, "split", key="6021")
    assert plan.action == "split" and len(plan.parts) == len(plan.part_keys) >= 42
    sizes = dict(files)
    for keys in plan.parts:
        assert len(keys) < ZENODO.max_files and sum(sizes[k] for k in keys) <= ZENODO.max_record_size
    assert sorted(k for part in plan.parts for k in part) == sorted(sizes)  # every file, once
    assert plan.part_keys[0] == part_key("6021", 1, len(plan.parts)) == f"6021.part-1-of-{len(plan.parts)}"
    # Re-planned from the files in another order: the same parts and keys (idempotent re-runs).
    again = plan_oversize(list(reversed(files)), ZENODO, "split", key="6021")
    assert again == plan
    assert split_parts(_files(5, 1), TargetLimits(2, 10, 10)) == [
        ["f000.dat"],
        ["f001.dat"],
        ["f002.dat"],
        ["f003.dat"],
        ["f004.dat"],
    ]


def test_a_file_over_the_per_file_limit_is_refused_whatever_the_mode() -> None:
    files = [("small.dat", 10), ("huge.root", 60 * 10**9)]
    for mode in ("bundle", "split", "refuse"):
        plan = plan_oversize(files, ZENODO, mode, key="1")
        assert plan.action == "refuse" and "file huge.root is 60000000000 bytes" in plan.reason


def test_the_mode_is_validated_in_config() -> None:
    with pytest.raises(ConfigError, match=r"targets.z.oversize must be one of bundle, split, refuse"):
        TargetConfig(name="z", type="zenodo", oversize="shrink")


# --- through the command line, against the sandbox ----------------------------------------


@pytest.fixture(scope="module")
def many_files() -> Iterator[SyntheticSource]:
    with dat_source({RECID: dat_names()}) as src:
        yield src


Setup = Callable[..., tuple[Path, RepositoryHandle, Path]]


@pytest.fixture
def setup(tmp_path: Path, many_files: SyntheticSource, repository_factory: Callable[..., RepositoryHandle]) -> Setup:
    """``setup(oversize=..., max_record_size=...)``: the config, the sandbox repository holding
    10 files per record (and the record size given), and the download folder."""

    def make(*, oversize: str, max_record_size: int = 10**9) -> tuple[Path, RepositoryHandle, Path]:
        repo = small_target(repository_factory, max_record_size=max_record_size)
        target: dict[str, Any] = {"max_files_per_record": MAX_FILES, "max_record_size": max_record_size}
        config = write_config(tmp_path, many_files, repo, oversize=oversize, **target)
        return config, repo, tmp_path / "data"

    return make


def _upload(config: Path, dest: Path, *more: str) -> int:
    return main(upload_args(config, RECID, "sandbox", dest, *more))


def _staged(dest: Path) -> list[Path]:
    return [p for p in (dest / RECID).rglob("*.dat")] if (dest / RECID).exists() else []


def test_refuse_names_the_limit_before_any_download_or_write(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config, repo, dest = setup(oversize="refuse")
    assert _upload(config, dest) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if f"record {RECID}" in line)
    assert "plan failed" in line and "transform" not in line
    assert f"{FILES} files > the target's limit of 10 files per record" in line
    assert _staged(dest) == [] and repo.state()["entities"] == []


def test_bundle_uploads_fewer_larger_files_within_the_limit(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config, repo, dest = setup(oversize="bundle")
    assert _upload(config, dest, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"record {RECID}:  oversize: bundle ({FILES} files > the target's limit of 10" in out
    assert repo.state()["entities"] == [] and _staged(dest) == []
    assert _upload(config, dest, "--publish") == 0, capsys.readouterr().err
    (entity,) = repo.state()["entities"]
    assert entity["published"] and 1 <= len(entity["record_files"]) <= 10
    assert all(str(name).endswith((".zip", ".json")) for name in entity["record_files"])


def test_bundle_refuses_a_record_over_the_byte_limit_and_suggests_split(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    config, repo, dest = setup(oversize="bundle", max_record_size=20_000)
    recids = write_recids(config.parent / "recids.txt", [RECID])
    assert main(bulk_args(config, recids, dest)) == 1
    err = capsys.readouterr().err
    assert f"{FILES * SIZE} bytes" in err and "limit of 20000 bytes" in err and 'oversize = "split"' in err
    assert repo.state()["entities"] == [] and _staged(dest) == []


def test_split_is_planned_by_dry_run_then_carried_out_as_linked_records_once(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    config, repo, dest = setup(oversize="split")
    assert _upload(config, dest, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "oversize: split into 4 linked records (9 files, 9 files, 9 files, 3 files)" in out
    for i in range(1, 5):
        assert f"part {RECID}.part-{i}-of-4:" in out
    assert repo.state()["entities"] == [] and _staged(dest) == []
    assert _upload(config, dest, "--publish") == 0, capsys.readouterr().err
    entities = repo.state()["entities"]
    assert len(entities) == 4 and all(e["published"] for e in entities)
    keys = [k for e in entities for k in e["record_files"]]
    assert all(len(e["record_files"]) <= 10 for e in entities)  # the sandbox's limit held
    assert sorted(keys) == sorted(set(keys))  # no file in two parts
    with Ledger.open(dest / ".ferry" / "ledger-sandbox.sqlite", readonly=True) as ledger:
        rows = [ledger.get(f"{RECID}.part-{i}-of-4") for i in range(1, 5)]
        assert all(r is not None and r.status == "published" and r.remote_id for r in rows)
        whole = ledger.get(RECID)
        assert whole is not None and whole.status == "published"
    sent = len(writes(repo.requests_log()))
    assert _upload(config, dest, "--publish") == 0, capsys.readouterr().err  # re-run: each part found again
    assert len(repo.state()["entities"]) == 4
    assert len(writes(repo.requests_log())) == sent
