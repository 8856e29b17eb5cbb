"""``oversize = "split"``: the corners tests/test_oversize.py leaves (issue 14 section 4).

The links between the parts as the target serves them, a split through ``ferry bulk``
and through the Zenodo profile (Zenodo stand-in), a part whose upload fails (the others
finish; the re-run finishes it and duplicates nothing), and the stats (parts counted as
parts of one record). Tiny limits make a 30-file, 60 kB synthetic record oversize.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ferry.cli import main
from stats.flow import flow_table, record_paths
from stats.load import load
from tests.bulk_support import SyntheticSource, bulk_args, stats_rows, write_config, write_recids
from tests.fixtures_repository import RepositoryHandle
from tests.fixtures_zenodo import ZenodoHandle
from tests.oversize_support import (
    FILES,
    MAX_FILES,
    PARTS,
    RECID,
    SIZE,
    SMALL,
    SOURCE_URL,
    dat_names,
    many_files,
    part_index,
    relation,
    repo,
    upload_args,
    writes,
    zen,
    zen_config,
    zen_get,
)

__all__ = ["many_files", "repo", "zen"]  # fixtures: the module-scoped synthetic source, the stand-ins


def _upload(config: Path, tmp_path: Path, target: str = "sandbox") -> list[str]:
    """``ferry upload`` of the split record, published, into tmp_path/data with stats in tmp_path/stats."""
    return upload_args(config, RECID, target, tmp_path / "data", "--stats-dir", str(tmp_path / "stats"), "--publish")


def _config(tmp_path: Path, src: SyntheticSource, repo: RepositoryHandle, **more: Any) -> Path:
    # Not zipped (small files would be): every file is then one key on the target to check.
    limits = {"zip_small_median_bytes": 0}
    return write_config(tmp_path, src, repo, limits=limits, oversize="split", max_files_per_record=MAX_FILES, **more)


def _served(repo: RepositoryHandle, record_id: str) -> dict[str, Any]:
    """The published record as the repository serves it (not what the client believes)."""
    request = urllib.request.Request(
        f"{repo.url}/api/particles/{record_id}", headers={"Authorization": f"Bearer {repo.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body: dict[str, Any] = json.loads(answer.read())
    return body


def _summary(stats: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["stats", "summary", str(stats), "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def _flow(stats: Path) -> dict[str, tuple[tuple[str, ...], int]]:
    """The Sankey's data per record: its path through the layers and its parts."""
    paths = record_paths(load(stats))
    return {str(r): (tuple(p), int(n)) for r, p, n in zip(paths.index, paths["path"], paths["parts"], strict=True)}


def _parts_by_index(repo: RepositoryHandle) -> dict[int, dict[str, Any]]:
    out = {}
    for entity in repo.state()["entities"]:
        body = _served(repo, entity["id"])
        title = body["metadata"]["title"]
        index = part_index(title)
        assert title.endswith(f"(part {index} of {PARTS})")
        out[index] = body
    assert sorted(out) == list(range(1, PARTS + 1)) and len(repo.state()["entities"]) == PARTS
    return out


def test_parts_link_each_other_and_the_source_on_the_target(
    tmp_path: Path, many_files: SyntheticSource, repo: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, many_files, repo)
    stats = tmp_path / "stats"
    assert main(_upload(config, tmp_path)) == 0, capsys.readouterr().err
    parts = _parts_by_index(repo)
    pages = {i: body["links"]["self_html"] for i, body in parts.items()}
    for i, body in parts.items():
        md = body["metadata"]
        related = {(r["identifier"], r["relation_type"]["id"]) for r in md["related_identifiers"]}
        # part of the source record (never "identical to" it), and each other part by its page
        assert (SOURCE_URL, "ispartof") in related and not any(rel == "isidenticalto" for _, rel in related)
        want = {(pages[j], relation(i, j).lower()) for j in pages if j != i}
        assert want <= related, (i, related)
        assert pages[i] not in {ident for ident, _ in related}  # not linked to itself
        assert md["description"].startswith(f"<p>Part {i} of {PARTS} of the record")
        for j in pages:
            if j != i:
                assert pages[j] in md["description"]  # "the other parts: part j of 4" lead there
        idents = [x["identifier"] for x in md.get("identifiers", [])]
        assert f"cernopendata:{RECID}.part-{i}-of-{PARTS}" in idents and f"cernopendata:{RECID}" not in idents
        assert "recid" not in md  # NRP's query of the whole record never finds a part
    # every file once, in exactly one part
    keys = [k for e in repo.state()["entities"] for k in e["record_files"] if k.endswith(".dat")]
    assert sorted(keys) == dat_names()
    # stats: one record (the source's), split into 4 parts; every file moved once
    summary = _summary(stats, capsys)
    assert summary["records"]["total"] == 1 and summary["records"]["ok"] == 1
    assert summary["records"]["parts"] == {"ok": PARTS}
    assert [run["records"] for run in summary["runs"]] == [{"ok": 1}]
    assert summary["moved"]["files_uploaded"] == FILES and summary["moved"]["bytes_uploaded"] == FILES * SIZE
    assert main(["stats", "summary", str(stats)]) == 0
    text = capsys.readouterr().out
    assert "records: 1 total, 1 ok" in text and f"split into {PARTS} parts: {PARTS} ok" in text


def test_bulk_splits_the_oversize_record_beside_one_that_fits_then_rerun_writes_nothing(
    tmp_path: Path, many_files: SyntheticSource, repo: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, many_files, repo)
    dest, stats = tmp_path / "data", tmp_path / "stats"
    recids = write_recids(tmp_path / "recids.txt", [RECID, SMALL])
    args = bulk_args(config, recids, dest, "--stats-dir", str(stats), "--publish")
    assert main(args) == 0, capsys.readouterr().err
    by_recid = repo.state()["by_recid"]
    assert by_recid[SMALL]["records"] == 1 and len(by_recid[SMALL]["ids"]) == 1
    assert len([e for e in repo.state()["entities"] if e["recid"] == RECID]) == PARTS
    titles = [_served(repo, e["id"])["metadata"]["title"] for e in repo.state()["entities"] if e["recid"] == RECID]
    assert sorted(t.rsplit("(", 1)[1] for t in titles) == [f"part {i} of {PARTS})" for i in range(1, PARTS + 1)]
    summary = _summary(stats, capsys)
    assert summary["records"]["total"] == 2 and summary["records"]["ok"] == 2
    assert summary["records"]["parts"] == {"ok": PARTS}
    assert summary["moved"]["files_uploaded"] == FILES + 3
    sent = writes(repo.requests_log())
    assert main(args) == 0, capsys.readouterr().err  # re-run: both found again, nothing written
    assert writes(repo.requests_log()) == sent
    assert len(repo.state()["entities"]) == PARTS + 1
    summary = _summary(stats, capsys)
    assert summary["records"]["total"] == 2 and summary["runs"][-1]["records"] == {"skipped": 2}
    assert summary["records"]["parts"] == {"ok": PARTS}  # a skip after ok keeps ok, per part too


def test_a_failing_part_leaves_the_others_finished_and_the_rerun_finishes_it_alone(
    tmp_path: Path, many_files: SyntheticSource, repo: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    # Part 3 holds m018..m026 (the plan is a pure function of the files: 9, 9, 9, 3): every
    # content upload of m020 answers 500, so part 3 fails once its retries are spent.
    repo.configure(error_rate=1.0, error_match=r"^PUT .*/files/m020\.dat/content")
    config = _config(tmp_path, many_files, repo)
    stats = tmp_path / "stats"
    args = _upload(config, tmp_path)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"record {RECID}" in err and "part 3 of 4" in err, err
    state = repo.state()["entities"]
    assert len(state) == PARTS  # part 3's draft exists (pass 1), nothing twice
    published = {e["id"]: e for e in state if e["published"]}
    assert len(published) == PARTS - 1  # the other parts finished
    (failed,) = [e for e in state if not e["published"]]
    assert "m020.dat" not in failed["draft_files"] or failed["draft_files"]["m020.dat"]["status"] != "completed"
    summary = _summary(stats, capsys)
    assert summary["records"]["total"] == 1 and summary["records"]["failed"] == 1
    assert summary["records"]["parts"] == {"ok": PARTS - 1, "failed": 1}
    # the flow figure's data: the one record fails where its part 3 failed (not "not published")
    assert _flow(stats) == {RECID: (("0:selected", "1:downloaded", "2:not zipped", "3:upload failed"), PARTS)}

    repo.configure(error_rate=0.0, error_match="")
    before = writes(repo.requests_log())
    assert main(args) == 0, capsys.readouterr().err
    after = writes(repo.requests_log())[len(before) :]
    assert after and all(failed["id"] in r["path"] or "/requests" in r["path"] for r in after), after
    parts = _parts_by_index(repo)  # still 4 records, each once, now all published
    assert all(e["published"] for e in repo.state()["entities"])
    assert {failed["id"]} == {b["id"] for i, b in parts.items() if i == 3}
    keys = [k for e in repo.state()["entities"] for k in e["record_files"] if k.endswith(".dat")]
    assert sorted(keys) == dat_names()  # every file once
    summary = _summary(stats, capsys)
    assert summary["records"]["total"] == 1 and summary["records"]["ok"] == 1
    assert summary["records"]["parts"] == {"ok": PARTS}
    # drawn from the run that finished it: part 3 uploaded, the others already on the target
    assert _flow(stats) == {RECID: (("0:selected", "1:downloaded", "2:not zipped", "3:uploaded", "4:published"), PARTS)}


# --- the Zenodo profile, against the Zenodo stand-in -------------------------------------


def test_zenodo_profile_splits_into_linked_depositions_once(
    tmp_path: Path, many_files: SyntheticSource, zen: ZenodoHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    config = zen_config(tmp_path, many_files, zen)
    stats = tmp_path / "stats"
    args = _upload(config, tmp_path, "zen")
    assert main(args) == 0, capsys.readouterr().err
    records = {}
    for dep in zen_get(zen, "/deposit/depositions?size=100"):
        assert dep["submitted"], dep["id"]  # every part published
        record = zen_get(zen, f"/records/{dep['id']}")
        records[part_index(record["metadata"]["title"])] = record
    assert sorted(records) == list(range(1, PARTS + 1))
    pages = {i: r["links"]["self_html"] for i, r in records.items()}
    for i, record in records.items():
        md = record["metadata"]
        related = {(r["identifier"], r["relation"]) for r in md["related_identifiers"]}
        assert (SOURCE_URL, "isPartOf") in related and not any(rel == "isIdenticalTo" for _, rel in related)
        want = {(pages[j], relation(i, j)) for j in pages if j != i}
        assert want <= related, (i, related)  # the other parts' record pages, not their deposit pages
        assert f"cernopendata:recid:{RECID}.part-{i}-of-{PARTS}" in md["keywords"]
        assert f"cernopendata:recid:{RECID}" not in md["keywords"]  # the whole record's search finds no part
        assert len(record["files"]) <= 10
    keys = sorted(f["key"] for r in records.values() for f in r["files"] if f["key"].endswith(".dat"))
    assert keys == dat_names()
    summary = _summary(stats, capsys)
    assert summary["records"]["total"] == 1 and summary["records"]["parts"] == {"ok": PARTS}
    sent = len(zen.writes())
    assert main(args) == 0, capsys.readouterr().err  # re-run: each part found again
    assert len(zen.writes()) == sent and len(zen_get(zen, "/deposit/depositions?size=100")) == PARTS


def test_a_zipped_split_record_counts_its_source_files_and_its_bundles_apart(
    tmp_path: Path, many_files: SyntheticSource, repo: RepositoryHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    """30 small files, 10 per record, zipped: 4 parts, each its bundle(s) and manifest or its files.

    The summary said "9 file(s) verified" for this 30-file record (the parts' uploads summed):
    now the source files and the files on the target are said apart, in the terminal and in stats."""
    # 2 kB files: zipped (the _config of the other tests turns zipping off)
    limits = {"zip_small_median_bytes": 1_000_000}
    config = write_config(tmp_path, many_files, repo, limits=limits, oversize="split", max_files_per_record=MAX_FILES)
    stats = tmp_path / "stats"
    assert main(_upload(config, tmp_path)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    on_target = [k for e in repo.state()["entities"] for k in e["record_files"]]
    assert len(repo.state()["entities"]) == PARTS and any(k.endswith(".zip") for k in on_target)
    assert len(on_target) < FILES  # bundles: fewer files on the target than the record has
    line = next(x for x in out.splitlines() if x.startswith(f"record {RECID}: ok"))
    assert line.startswith(
        f"record {RECID}: ok, {FILES} source file(s) as {PARTS} linked records, "
        f"{len(on_target)} file(s) verified on the target (zip bundles and their manifests)"
    ), line
    record = [r for r in stats_rows(stats) if r["stage"] == "record" and r["recid"] == RECID and r["status"] == "ok"]
    assert len(record) == 1 and record[0]["file_count"] == FILES
    assert record[0]["extra"]["uploaded_files"] == len(on_target) and record[0]["extra"]["parts"] == PARTS
    summary = _summary(stats, capsys)
    assert summary["records"]["files"] == {"source": FILES, "on_target": len(on_target)}
    slow = summary["slowest_records"][0]
    assert (slow["recid"], slow["file_count"], slow["uploaded_files"], slow["parts"]) == (
        RECID,
        FILES,
        len(on_target),
        PARTS,
    )
    assert main(["stats", "summary", str(stats)]) == 0
    text = capsys.readouterr().out
    assert f"files:   {FILES} source files of the ok records, {len(on_target)} on the target" in text
    # the flow figure's data: one record, zipped (its parts were) and published (all four were)
    path = ("0:selected", "1:downloaded", "2:zipped", "3:uploaded", "4:published")
    assert _flow(stats) == {RECID: (path, PARTS)}
    nodes, links = flow_table(load(stats))
    assert nodes.set_index("id").loc[list(path), ["value", "split", "parts"]].to_numpy().tolist() == [[1, 1, PARTS]] * 5
    assert links["value"].tolist() == [1, 1, 1, 1]
