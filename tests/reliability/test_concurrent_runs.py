"""Two runs at once on one target (issue 16, sections 1 and 5), per target kind.

Two ``ferry bulk --publish`` runs with different ``--dest`` (so different ledgers, as on two
machines) start together against the same target; then each is run again. The target,
read with its own tools (the stand-in's admin state, boto, the file system), must hold
every record once with the source's md5s, nothing else; an exit code must be honest: 0
only for a run that finished its records, 1 with the reason for one that stood back.

The rule per target (docs/reliability.md): the Zenodo stand-in's search lags 2 s, so both
runs miss the other's fresh deposition; the oldest create wins and the loser discards its
own (``pipeline.claims``, the same rule as InvenioRDM in tests/test_reliability_claims.py).
S3 and a local folder name a record by a deterministic key found by direct lookup: both
runs write the same keys with the same bytes, and what is left is one object per file.
Two ``ferry mirror`` runs of one S3 prefix: the second is refused by the lock object.

Each case is one round in CI and ``ROUNDS`` rounds with ``--long`` (tests/reliability/options.py),
each round on a fresh target (a new stand-in, bucket or folder) and fresh dests; every round
is judged on its own, and the test prints what the rounds saw (how many settled a claim).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bulk_support import SyntheticSource, synthetic_source, write_recids
from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.reliability.kill_support import exactly, md5, s3_objects, s3_open_uploads, spawn, tree_md5
from tests.reliability.options import rounds

ZenFactory = Callable[..., ZenodoHandle]
LIMITS = ["[limits]", "backoff_base = 0.05", "backoff_max = 0.5", "retries = 3"]
LOST = "another run created this record first"
ROUNDS = 10  # with --long


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    with synthetic_source() as src:
        yield src


@pytest.fixture
def repeats(long_run: bool) -> int:
    return rounds(long_run, 1, ROUNDS)


def _round_dir(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"round-{n}"
    path.mkdir()
    return path


def _chosen(src: SyntheticSource) -> list[str]:
    return [src.recids[i] for i in (1, 2, 3, 5)]  # unzipped records: the checks read their files


def _s3_env(server: S3Server) -> dict[str, str]:
    return {
        **server.env(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _both(tmp_path: Path, src: SyntheticSource, section: list[str], env: dict[str, str]) -> list[str]:
    """Two bulk runs at once (dests a and b), then each again; their logs (texts)."""
    config = tmp_path / "ferry.toml"
    lines = ["[source.cernopendata]", f'portal = "{src.portal_url}"', "", "[targets.t]", *section, "", *LIMITS]
    config.write_text("\n".join(lines) + "\n")
    recids = write_recids(tmp_path / "recids.txt", _chosen(src))
    runs = []
    for name in ("a", "b"):
        args = ["--config", str(config), "bulk", "--recids", str(recids), "--target", "t"]
        args += ["--dest", str(tmp_path / name), "--publish"]
        runs.append((args, tmp_path / f"{name}.log", spawn(args, tmp_path / f"{name}.log", env)))
    codes = [proc.wait(timeout=180) for _, _, proc in runs]
    logs = [log.read_text(errors="replace") for _, log, _ in runs]
    assert "Traceback" not in "".join(logs), logs
    lost = [text.count(LOST) for text in logs]
    for code, n, text in zip(codes, lost, logs, strict=True):
        # Honest: 0 only when no record stood back; a run that lost a claim says so, exit 1.
        assert code == (1 if n else 0), (code, n, text[-3000:])
    for args, log, _ in runs:  # again: each finds every record there (or finishes it), exit 0
        again = spawn(args, log, env)
        assert again.wait(timeout=180) == 0, log.read_text(errors="replace")[-3000:]
    return logs


def test_two_bulk_runs_on_zenodo_with_lagging_search(
    tmp_path: Path, source: SyntheticSource, zenodo_factory: ZenFactory, repeats: int
) -> None:
    settled = 0
    for n in range(repeats):
        here = _round_dir(tmp_path, n)
        zen = zenodo_factory(rate_per_minute=100_000, rate_per_hour=1_000_000, index_delay_ms=2000)
        token = here / "zenodo.token"
        token.write_text(zen.token)
        logs = _both(here, source, ['type = "zenodo"', f'url = "{zen.url}"', f'token_file = "{token}"'], {})
        items: list[dict[str, Any]] = zen.summary()["items"]
        problems = []
        for recid in _chosen(source):
            mine = [i for i in items if recid in str(i["title"])]
            if len(mine) != 1 or mine[0]["state"] != "done":
                problems.append(f"{recid}: {[(i['id'], i['state']) for i in mine]}, want one published")
                continue
            got = [(k, str(v["md5"])) for k, v in mine[0]["files"].items()]
            problems += exactly(source.source_md5(recid), got, recid)
        assert len(items) == len(_chosen(source)), (n, items)
        assert problems == [], (n, logs)
        settled += sum(text.count(LOST) for text in logs)
    print(f"\nconcurrent zenodo: {repeats} round(s), {settled} claim(s) settled, 0 duplicates")


def test_two_bulk_runs_on_s3(tmp_path: Path, source: SyntheticSource, moto_s3: S3Server, repeats: int) -> None:
    for n in range(repeats):
        here = _round_dir(tmp_path, n)
        bucket = moto_s3.make_bucket()
        section = ['type = "s3"', f'url = "s3://{bucket}/both"', f'endpoint_url = "{moto_s3.endpoint_url}"']
        logs = _both(here, source, section, _s3_env(moto_s3))
        held = s3_objects(moto_s3, bucket)
        problems = []
        for recid in _chosen(source):
            got = [(k.split("/")[2], md5(v)) for k, v in held.items() if k.split("/")[1] == recid]
            problems += exactly(source.source_md5(recid), got, recid)
        chosen = _chosen(source)
        problems += [f"stray {k}" for k in held if k.split("/")[1] not in chosen or not k.endswith("/content")]
        problems += [f"open multipart upload {k}" for k in s3_open_uploads(moto_s3, bucket)]
        assert problems == [], (n, logs)
        assert not any(LOST in text for text in logs)  # nothing to settle: one key, one object
    print(f"\nconcurrent s3: {repeats} round(s), 0 duplicates")


def test_two_bulk_runs_into_a_local_folder(tmp_path: Path, source: SyntheticSource, repeats: int) -> None:
    for n in range(repeats):
        here = _round_dir(tmp_path, n)
        root = here / "archive"
        logs = _both(here, source, ['type = "local"', f'url = "{root}"'], {})
        held = tree_md5(root)
        problems = []
        for recid in _chosen(source):
            got = [(Path(k).name, v) for k, v in held if Path(k).parts[0] == recid]
            problems += exactly(source.source_md5(recid), got, recid)
        problems += [f"stray {k}" for k, _ in held if Path(k).parts[0] not in _chosen(source)]
        assert problems == [], (n, logs)
    print(f"\nconcurrent local: {repeats} round(s), 0 duplicates")


# --- ferry mirror: two runs of one prefix ---------------------------------------------------


def test_two_mirrors_of_one_prefix_the_second_is_refused(
    tmp_path: Path, zenodo_factory: ZenFactory, moto_s3: S3Server, repeats: int
) -> None:
    for n in range(repeats):
        _two_mirrors(_round_dir(tmp_path, n), zenodo_factory, moto_s3)
    print(f"\nconcurrent mirror: {repeats} round(s), the second refused by the lock each time, 0 duplicates")


def _two_mirrors(here: Path, zenodo_factory: ZenFactory, moto_s3: S3Server) -> None:
    from tests.test_zenodo_source import publish

    zen = zenodo_factory(latency_ms=40)
    bucket = moto_s3.make_bucket()
    files = {f"f{i}.bin": os.urandom(400_000 + i) for i in range(8)}
    record = publish(zen, files)
    config = here / "ferry.toml"
    config.write_text(
        f'[source.zenodo]\nurl = "{zen.url}"\n\n'
        f'[targets.m]\ntype = "s3"\nurl = "s3://{bucket}/mirror"\nendpoint_url = "{moto_s3.endpoint_url}"\n\n'
        + "\n".join(LIMITS)
        + "\n"
    )
    env = _s3_env(moto_s3)
    runs: list[tuple[list[str], Path, subprocess.Popen[bytes]]] = []
    for name in ("a", "b"):
        args = ["--config", str(config), "mirror", f"zenodo:{record['id']}", "m", "--jobs", "2"]
        args += ["--stats-dir", str(here / f"stats-{name}")]
        runs.append((args, here / f"{name}.log", spawn(args, here / f"{name}.log", env)))
    codes = [proc.wait(timeout=180) for _, _, proc in runs]
    logs = [log.read_text(errors="replace") for _, log, _ in runs]
    assert "Traceback" not in "".join(logs), logs
    assert 0 in codes, logs  # one of them mirrored the record
    refused = [text for code, text in zip(codes, logs, strict=True) if code != 0]
    # The other either found it all there (it started after the first finished) or was
    # refused, naming the lock's holder, with exit 1.
    for code, text in zip(codes, logs, strict=True):
        if code != 0:
            assert code == 1 and "lock" in text.lower(), (code, text[-3000:])
    for args, log, _ in runs:  # again: nothing left to do, exit 0
        assert spawn(args, log, env).wait(timeout=180) == 0, log.read_text(errors="replace")[-3000:]
    held = s3_objects(moto_s3, bucket)
    want = {k: md5(v) for k, v in files.items()}
    for folder in (str(record["id"]), "latest"):
        start = f"mirror/{folder}/"
        got = [(k[len(start) :].removesuffix("/content"), md5(v)) for k, v in held.items() if k.startswith(start)]
        got = [(k, v) for k, v in got if k != "_manifest.json"]
        assert exactly(want, got, folder) == [], sorted(held)
    expected = {f"mirror/{f}/{k}/content" for f in (str(record["id"]), "latest") for k in files}
    assert set(held) - expected == {"mirror/latest/_manifest.json"}  # no lock left, no twin
    assert s3_open_uploads(moto_s3, bucket) == []
    assert refused, "both mirrors ran to the end without meeting the other: the lock was not tried"
