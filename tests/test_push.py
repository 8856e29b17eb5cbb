"""`ferry push DIR`: a directory into a Zenodo deposition, against the Zenodo stand-in.

Outcomes are read from the stand-in (its state and its request log), not from ferry.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from tests.fixtures_zenodo import ZenodoHandle
from tests.test_zenodo_target import writes, zen_config

ROOT = Path(__file__).resolve().parents[1]
META = ["--title", "Cartload run", "--creators", "Doe, Jane", "--description", "tiles", "--upload-type", "dataset"]


def make_dir(base: Path, files: dict[str, bytes]) -> Path:
    d = base / "out"
    for name, data in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return d


def push(config: Path, directory: Path, *args: str) -> int:
    return main(["--config", str(config), "push", str(directory), "--target", "zen", *args])


def items(zen: ZenodoHandle) -> list[dict[str, Any]]:
    return list(zen.summary()["items"])


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def puts(zen: ZenodoHandle, status: int | None = 201) -> list[str]:
    return [
        r["path"].rsplit("/", 1)[1]
        for r in zen.requests()
        if r["method"] == "PUT" and r["path"].startswith("/api/files/") and (status is None or r["status"] == status)
    ]


def test_new_deposition_verified_and_a_rerun_writes_nothing(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"a.pmtiles": b"a" * 5000, "b.tsv": b"b\n" * 300, ".hidden": b"x", "c.zenodo.done": b"{}"}
    d = make_dir(tmp_path, files)
    config = zen_config(tmp_path, zenodo)
    assert push(config, d, *META, "--stats-dir", str(tmp_path / "stats")) == 0, capsys.readouterr().err
    (item,) = items(zenodo)
    assert item["state"] == "unsubmitted" and item["title"] == "Cartload run"
    assert item["files"] == {
        k: {"size": len(v), "md5": md5(v)} for k, v in files.items() if k[0] != "." and "done" not in k
    }
    before = writes(zenodo)
    assert push(config, d, *META) == 0  # the same directory again: found through its ledger
    assert writes(zenodo) == before and len(items(zenodo)) == 1
    rows = [json.loads(line) for f in (tmp_path / "stats").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert {r["file"] for r in rows if r["stage"] == "upload" and r["status"] == "ok"} == {"a.pmtiles", "b.tsv"}


def test_bad_input_is_refused_before_any_request(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = zen_config(tmp_path, zenodo)
    flat = make_dir(tmp_path / "flat", {"a.txt": b"1"})
    assert push(config, flat, "--title", "T", "--creators", "Doe, Jane", "--upload-type", "dataset") == 2
    assert "needs description" in capsys.readouterr().err
    d = make_dir(tmp_path, {"a.txt": b"1", "sub/a.txt": b"2", "sub/b.txt": b"3"})
    assert push(config, d, *META) == 2
    err = capsys.readouterr().err
    assert "sub/a.txt" in err and "--flatten" in err
    assert push(config, d, *META, "--flatten") == 2
    err = capsys.readouterr().err
    assert str(d / "a.txt") in err and str(d / "sub" / "a.txt") in err  # both named
    assert push(config, d, *META, "--select", "files", "--files", "a.txt", str(d / "a.txt")) == 2
    assert push(config, d, *META, "--select", "files", "--files", "../elsewhere") == 2
    assert push(config, d, *META, "--creators", "Jane Doe") == 2
    assert "Family, Given" in capsys.readouterr().err
    assert zenodo.requests() == []  # not one request, not even a read


def test_flatten_sends_sub_paths_under_their_names(tmp_path: Path, zenodo: ZenodoHandle) -> None:
    d = make_dir(tmp_path, {"top.txt": b"1", "sub/inner.txt": b"22"})
    assert push(zen_config(tmp_path, zenodo), d, *META, "--flatten") == 0
    assert set(items(zenodo)[0]["files"]) == {"top.txt", "inner.txt"}


def test_existing_draft_one_field_overridden_skip_replace_and_restart(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_dir(tmp_path, {"a.bin": b"A" * 1000, "b.bin": b"B" * 1000})
    config = zen_config(tmp_path, zenodo)
    assert push(config, d, *META) == 0
    dep = str(items(zenodo)[0]["id"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.bin").write_bytes(b"A" * 1000)  # same key, size and md5: skipped
    (other / "b.bin").write_bytes(b"C" * 1000)  # same key and size, other md5: replaced
    n = len(zenodo.requests())
    assert push(config, other, "--deposition", dep, "--title", "New title") == 0, capsys.readouterr().err
    (item,) = items(zenodo)
    assert item["title"] == "New title" and item["files"]["b.bin"]["md5"] == md5(b"C" * 1000)
    new_writes = [f"{r['method']} {r['path']}" for r in zenodo.requests()[n:] if r["writing"]]
    assert new_writes == [f"PUT /api/deposit/depositions/{dep}", f"PUT /api/files/{_bucket(zenodo, dep)}/b.bin"]
    state = zenodo.runner.call(lambda: zenodo.runner.running.state.depositions[int(dep)].metadata)  # type: ignore[union-attr]
    assert state["creators"] == [{"name": "Doe, Jane"}] and state["description"] == "tiles"  # others kept
    n = len(zenodo.requests())
    assert push(config, other, "--deposition", dep, "--title", "New title") == 0  # unchanged: nothing sent
    assert [r for r in zenodo.requests()[n:] if r["writing"]] == []
    assert push(config, other, "--deposition", dep, "--restart") == 0
    assert sorted(puts(zenodo)[-2:]) == ["a.bin", "b.bin"]  # restart: both again


def _bucket(zen: ZenodoHandle, dep: str) -> str:
    running = zen.runner.running
    assert running is not None
    return str(zen.runner.call(lambda: running.state.depositions[int(dep)].bucket))


def test_published_gets_a_new_version_and_asking_again_reuses_it(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_dir(tmp_path, {"a.bin": b"A" * 100, "b.bin": b"B" * 100})
    config = zen_config(tmp_path, zenodo)
    assert push(config, d, *META, "--publish") == 0, capsys.readouterr().err
    (first,) = items(zenodo)
    assert first["state"] == "done"
    (d / "b.bin").write_bytes(b"b" * 100)
    (d / "c.bin").write_bytes(b"C" * 10)
    fresh = tmp_path / "fresh"  # another checkout of the directory: no ledger
    fresh.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (fresh / name).write_bytes((d / name).read_bytes())
    assert push(config, fresh, "--deposition", str(first["id"]), "--select", "files", "--files", "b.bin", "c.bin") == 0
    by_id = {i["id"]: i for i in items(zenodo)}
    assert len(by_id) == 2
    draft = next(i for i in by_id.values() if i["state"] == "unsubmitted")
    assert draft["files"]["a.bin"]["md5"] == md5(b"A" * 100)  # imported, untouched
    assert draft["files"]["b.bin"]["md5"] == md5(b"b" * 100) and "c.bin" in draft["files"]
    assert by_id[first["id"]]["files"]["b.bin"]["md5"] == md5(b"B" * 100)  # the published one unchanged
    # Again with the published id: Zenodo answers 400 "Please remove all files first.";
    # the push must use the open draft, not fail and not make another.
    assert push(config, fresh, "--deposition", str(first["id"]), "--select", "files", "--files", "c.bin") == 0
    assert len(items(zenodo)) == 2
    assert [r["status"] for r in zenodo.requests() if r["path"].endswith("newversion")] == [201, 400]


CATALOG = """\
id: run-1
title: Example
assets:
  sge: sge.pmtiles
  basemap:
    sge:
      default: dark
      dark: sge-dark.pmtiles
    hist:
      default: he
      he: histology.pmtiles
  factors:
    - id: t10
      name: LDA 10
      pmtiles: t10.pmtiles
      umap:
        tsv: t10.umap.tsv
        png: t10.umap.png
      alias: t10.alias.tsv
"""


def test_catalog_mode_groups_order_marker_and_a_missing_optional(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["sge.pmtiles", "sge-dark.pmtiles", "histology.pmtiles", "t10.pmtiles", "t10.umap.tsv", "t10.alias.tsv"]
    d = make_dir(tmp_path, {n: n.encode() * 10 for n in names} | {"catalog.yaml": CATALOG.encode(), "extra.log": b"x"})
    config = zen_config(tmp_path, zenodo)
    code = push(config, d, *META, "--select", "catalog", "--marker", "--jobs", "1")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "WARNING" in err and "t10.umap.png" in err  # the missing optional file is a warning
    sent = puts(zenodo)
    assert set(sent) == {*names, "catalog.yaml"}  # extra.log is not in the catalog
    core = {"sge.pmtiles", "sge-dark.pmtiles", "t10.pmtiles", "catalog.yaml"}
    assert (
        set(sent[:4]) == core and sent[4] == "histology.pmtiles" and set(sent[5:]) == {"t10.umap.tsv", "t10.alias.tsv"}
    )
    marker = json.loads((d / "cartload.zenodo.done").read_text())
    assert marker["record"] == str(items(zenodo)[0]["id"]) and set(marker["files"]) == core
    (d / "sge-dark.pmtiles").unlink()
    assert push(config, d, "--select", "catalog") == 2
    assert "assets.basemap.sge.dark" in capsys.readouterr().err


def test_over_100_files_is_refused_with_the_numbers(
    tmp_path: Path, zenodo_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    zenodo = zenodo_factory(rate_per_minute=10_000)  # 98 files in a few seconds, not at 100/min
    d = make_dir(tmp_path, {f"f{i:03d}.txt": b"%d" % i for i in range(98)})
    config = zen_config(tmp_path, zenodo, requests_per_minute=10_000)
    assert push(config, d, *META) == 0
    dep = str(items(zenodo)[0]["id"])
    more = make_dir(tmp_path / "more", {f"g{i}.txt": b"g" for i in range(3)})
    n = len(zenodo.writes())
    assert push(config, more, "--deposition", dep) == 1
    err = capsys.readouterr().err
    assert "101 files" in err and "98 on the target + 3 new" in err and "limit of 100" in err
    assert len(zenodo.writes()) == n


def test_dry_run_makes_no_writing_request(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_dir(tmp_path, {"a.bin": b"A" * 10, "b.bin": b"B" * 20})
    config = zen_config(tmp_path, zenodo)
    assert push(config, d, *META, "--dry-run", "--publish", "--marker") == 0
    out = capsys.readouterr().out
    assert "a new draft" in out and "send" in out and "limits: 2 file(s) of 100" in out
    assert zenodo.requests() == [] and not (d / ".ferry").exists()
    assert push(config, d, *META, "--publish") == 0
    dep = str(items(zenodo)[0]["id"])
    (d / "b.bin").write_bytes(b"b" * 20)
    n = len(zenodo.requests())
    assert push(config, d, "--deposition", dep, "--title", "Other", "--dry-run", "--marker") == 0
    out = capsys.readouterr().out
    assert "a new version" in out and "skip    a.bin" in out and "replace b.bin" in out
    assert [r for r in zenodo.requests()[n:] if r["writing"]] == [] and len(zenodo.requests()) > n
    assert not list(d.glob("*.done"))


def test_publish_only_after_every_file_is_verified(
    tmp_path: Path, zenodo_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    zen = zenodo_factory(max_bytes=1500)  # the server refuses the last file: over its quota
    d = make_dir(tmp_path, {"a.bin": b"A" * 1000, "b.bin": b"B" * 1000})
    config = zen_config(tmp_path, zen)
    assert push(config, d, *META, "--publish", "--jobs", "1") == 1
    err = capsys.readouterr().err
    assert "file b.bin" in err and "quota" in err.lower()
    assert zen.summary()["published"] == 0
    assert not [r for r in zen.requests() if r["path"].endswith("/actions/publish")]


def test_killed_push_run_again_makes_no_twin_and_sends_nothing_twice(tmp_path: Path, zenodo: ZenodoHandle) -> None:
    zenodo.configure(latency_ms=60)
    d = make_dir(tmp_path, {f"f{i:02d}.bin": os.urandom(50_000) for i in range(30)})
    config = zen_config(tmp_path, zenodo)
    cmd = [sys.executable, "-m", "ferry.cli", "--config", str(config), "push", str(d), "--target", "zen", *META]
    child = subprocess.Popen([*cmd, "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(puts(zenodo)) < 8 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    done_before = len(puts(zenodo))
    assert 8 <= done_before < 30
    zenodo.configure(latency_ms=0)
    again = subprocess.run([*cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    (item,) = items(zenodo)  # one deposition
    assert len(item["files"]) == 30
    sent = puts(zenodo)
    assert sorted(sent) == sorted(set(sent))  # every file completed exactly once


def test_the_same_push_into_an_invenio_draft(
    tmp_path: Path, repository: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "repo.token"
    token.write_text(repository.token)
    config = tmp_path / "invenio.toml"
    config.write_text(
        f'[targets.zen]\ntype = "invenio"\nurl = "{repository.url}"\ntoken_file = "{token}"\n'
        'profile = "inveniordm"\nrequests_per_minute = 6000\nrequests_per_hour = 100000\n'
    )
    d = make_dir(tmp_path, {"a.bin": b"A" * 300, "run1/b.bin": b"B" * 200})  # sub-paths kept: the target has them
    assert push(config, d, *META) == 0, capsys.readouterr().err
    assert "2 sent" in capsys.readouterr().out  # run1/b.bin kept its sub-path as key
    n = len(repository.requests_log())
    # Again: no file is sent (this target's metadata cannot be read, so the document is).
    assert push(config, d, *META) == 0, capsys.readouterr().err
    again = [f"{r['method']} {r['path']}" for r in repository.requests_log()[n:] if r["method"] not in ("GET", "HEAD")]
    assert again and all("/files" not in w for w in again), again
    assert "2 already there" in capsys.readouterr().out


def test_quiet_push_prints_its_result_not_its_plan_a_quiet_dry_run_still_its_plan(
    tmp_path: Path, zenodo: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_dir(tmp_path, {"a.bin": b"A" * 10, "b.bin": b"B" * 20})
    config = zen_config(tmp_path, zenodo)
    assert main(["-q", "--config", str(config), "push", str(d), "--target", "zen", *META, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "send    a.bin" in out and "limits:" in out  # the plan is all a dry run says
    assert main(["-q", "--config", str(config), "push", str(d), "--target", "zen", *META]) == 0
    out = capsys.readouterr().out
    assert "send" not in out and "limits:" not in out  # a line per file is not "errors only"
    assert out.strip().splitlines() == [line for line in out.strip().splitlines() if "2 sent" in line]
