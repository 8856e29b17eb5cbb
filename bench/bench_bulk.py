"""Benchmark: ``ferry bulk`` -- stage overlap, memory vs number of files, re-run overhead.

    .venv/bin/python bench/bench_bulk.py [--parts a,b,c] [--repeat 2]

All against the sandbox on loopback: XRootD serving generated data (sandbox.datagen,
deterministic pseudo-random bytes) and the sandbox repository as its own process (rate
limits off). Default ferry limits unless said otherwise. Every ferry run is a separate
process under ``/usr/bin/time -v``; peak RSS is reported two ways: the largest single
process (time -v) and the sum over the process tree (ferry + zip workers), polled from
/proc every 20 ms.

a. Overlap. 50 records: one with a single 1 GiB file, 24 "small" records (5 files of
   1-4 MiB) and 25 "medium" ones (4 files of 8-32 MiB). Three commands, interleaved, each
   ``--repeat`` times, medians:
   - download-only: ``ferry download --records R`` into a fresh folder;
   - upload-only: ``ferry bulk`` into a FRESH repository (fresh ledger) over a folder
     where every file is already downloaded and verified by its manifest, so only the
     upload stages run;
   - bulk: ``ferry bulk`` from scratch (fresh folder, fresh repository).
   Target: bulk <= 1.25 x max(download-only, upload-only).
b. Memory. 100 records x 10 tiny files (1,000 files) vs 100 records x 100 tiny files
   (10,000 files), 1-8 KiB each, full ``ferry bulk`` (download + upload). Zipping is
   switched off (``limits.zip_threshold = 1000``; the target's 100 files per record
   holds), so every file is its own download, upload and ledger row: the worst case for
   per-file state. Also the 10,000 files with the default zip threshold (20), where each
   record goes up as one bundle. Target: ratio <= 1.3 and < 300 MB.
c. Re-run. The exact same command as the 10,000-file run of b, again, after it finished:
   seconds and requests made to the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    EXACT,
    FERRY,
    GENEROUS,
    GiB,
    Measured,
    MiB,
    RepoProcess,
    bench_record,
    machine,
    machine_line,
    measure,
    median,
    sync,
    tail,
    workdir,
    write_config,
)

KiB = 1024


def overlap_records(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    recs = [bench_record("971000", [GiB], title="Benchmark: one 1 GiB file")]
    for i in range(1, 50):
        if i % 2:
            sizes = [rng.randint(8 * MiB, 32 * MiB) for _ in range(4)]
        else:
            sizes = [rng.randint(1 * MiB, 4 * MiB) for _ in range(5)]
        recs.append(bench_record(str(971000 + i), sizes))
    return recs


def tiny_records(base: int, count: int, files: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [bench_record(str(base + i), [rng.randint(KiB, 8 * KiB) for _ in range(files)]) for i in range(count)]


class Bench:
    def __init__(self, wd: Path, portal: str, all_records: list[dict[str, Any]]) -> None:
        self.wd = wd
        self.portal = portal
        self.by_recid = {str(r["recid"]): r for r in all_records}
        self.rows: list[dict[str, Any]] = []

    def records_file(self, name: str, recids: list[str]) -> tuple[Path, Path]:
        """A records file with only these records (the cache loads all of it) and a recid list."""
        path = self.wd / f"{name}.records.json"
        path.write_text(json.dumps([self.by_recid[r] for r in recids]))
        listing = self.wd / f"{name}.recids"
        listing.write_text("\n".join(recids) + "\n")
        return path, listing

    def config(self, name: str, repo: RepoProcess | None, limits: dict[str, Any] | None = None) -> Path:
        path = self.wd / f"{name}.toml"
        if repo is None:
            path.write_text(f'[source.cernopendata]\nportal = "{self.portal}"\n')
            return path
        return write_config(path, portal=self.portal, repo=repo, limits=limits)

    def run(self, label: str, cmd: list[str], **extra: Any) -> Measured:
        sync()
        m = measure(cmd)
        row = {"label": label, "seconds": m.wall, "rc": m.rc, "rss_mb": m.maxrss_mb, "tree_mb": m.tree_peak_mb}
        row.update(extra)
        self.rows.append(row)
        print(
            f"{label}: {m.wall:.2f} s, rc {m.rc}, RSS {m.maxrss_mb:.0f} MB (tree {m.tree_peak_mb:.0f} MB) "
            + " ".join(f"{k}={v}" for k, v in extra.items()),
            file=sys.stderr,
        )
        if m.rc != 0:
            raise RuntimeError(f"{label} failed ({m.rc}): {' '.join(cmd)}\n{tail(m.stderr, 30)}")
        return m

    def bulk_cmd(self, cfg: Path, records: Path, recids: Path, dest: Path, ledger: Path, stats: Path) -> list[str]:
        return [
            FERRY, "--config", str(cfg), "bulk", "--recids", str(recids), "--records", str(records),
            "--target", "sandbox", "--dest", str(dest), "--ledger", str(ledger), "--stats-dir", str(stats),
        ]  # fmt: skip


def server_check(repo: RepoProcess, recids: list[str], files: int) -> str:
    """Every recid once on the server, and ``files`` completed files with an md5 in all."""
    with urllib.request.urlopen(f"{repo.url}/_sandbox/state") as resp:
        state = json.loads(resp.read())
    by = state["by_recid"]
    once = sum(1 for r in recids if r in by and len(by[r]["ids"]) == 1)
    done = sum(
        1
        for e in state["entities"]
        for f in e["draft_files"].values()
        if f["status"] == "completed" and str(f.get("checksum") or "").startswith("md5:")
    )
    if once != len(recids) or done != files:
        raise RuntimeError(f"server holds {once}/{len(recids)} records once, {done}/{files} completed files")
    return f"{once} records once, {done} files completed with md5"


# --- part a -------------------------------------------------------------------------------


def part_a(b: Bench, recs: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    recids = [str(r["recid"]) for r in recs]
    nfiles = sum(len(r["files"]) for r in recs)
    total = sum(int(f["size"]) for r in recs for f in r["files"])
    records, listing = b.records_file("a", recids)
    ready = b.wd / "a-ready"
    cfg0 = b.config("a-download", None)
    # Setup (not timed): a folder with every file downloaded and verified, for upload-only.
    b.run("a setup download", [FERRY, "--config", str(cfg0), "download", "--records", str(records), "--dest",
                               str(ready)])  # fmt: skip
    kinds = ["download-only", "upload-only", "bulk"]
    for trial in range(1, repeat + 1):
        order = kinds[trial - 1 :] + kinds[: trial - 1]  # rotate who goes first
        for kind in order:
            tag = f"a-{kind}-{trial}"
            if kind == "download-only":
                dest = b.wd / tag
                b.run(f"a {kind} #{trial}", [FERRY, "--config", str(cfg0), "download", "--records", str(records),
                                             "--dest", str(dest)], kind=kind, bytes=total)  # fmt: skip
                shutil.rmtree(dest)
                continue
            with RepoProcess(b.wd / f"{tag}-repo", dict(GENEROUS)) as repo:
                cfg = b.config(tag, repo)
                dest = ready if kind == "upload-only" else b.wd / tag
                cmd = b.bulk_cmd(cfg, records, listing, dest, b.wd / f"{tag}.ledger", b.wd / f"{tag}-stats")
                m = b.run(f"a {kind} #{trial}", cmd, kind=kind, bytes=total)
                b.rows[-1]["requests"] = repo.request_count()
                b.rows[-1]["server"] = server_check(repo, recids, nfiles)
                assert m.rc == 0
            if kind == "bulk":
                shutil.rmtree(dest)
    rows = [r for r in b.rows if r.get("kind")]
    med = {k: median([r["seconds"] for r in rows if r["kind"] == k]) for k in kinds}
    return {"files": nfiles, "bytes": total, "medians": med}


# --- parts b and c ------------------------------------------------------------------------


def part_bc(b: Bench, small: list[dict[str, Any]], large: list[dict[str, Any]], do_c: bool) -> None:
    nozip = {"zip_threshold": 1000}
    for name, recs, limits in (
        ("b-1000", small, nozip),
        ("b-10000", large, nozip),
        ("b-10000-zipped", large, {}),
    ):
        recids = [str(r["recid"]) for r in recs]
        nfiles = sum(len(r["files"]) for r in recs)
        records, listing = b.records_file(name, recids)
        with RepoProcess(b.wd / f"{name}-repo", dict(GENEROUS)) as repo:
            cfg = b.config(name, repo, limits)
            dest, ledger, stats = b.wd / f"{name}-data", b.wd / f"{name}.ledger", b.wd / f"{name}-stats"
            cmd = b.bulk_cmd(cfg, records, listing, dest, ledger, stats)
            b.run(f"{name}", cmd, part="b", files=nfiles, zipped=not limits)
            b.rows[-1]["requests"] = repo.request_count()
            expect = nfiles if not limits else len(recs)  # zipped: one bundle per record
            b.rows[-1]["server"] = server_check(repo, recids, expect)
            if do_c and name == "b-10000":
                before = repo.request_count()
                b.run("c re-run of b-10000", cmd, part="c", files=nfiles)
                b.rows[-1]["requests"] = repo.request_count() - before
                b.rows[-1]["server"] = server_check(repo, recids, nfiles)
        shutil.rmtree(dest, ignore_errors=True)


# --- report -------------------------------------------------------------------------------


def report(facts: dict[str, Any], rows: list[dict[str, Any]], a: dict[str, Any] | None, argv: str) -> str:
    out = [f"Command: `.venv/bin/python bench/bench_bulk.py {argv}`  ", f"Machine: {machine_line(facts)}", ""]
    if a is not None:
        med = a["medians"]
        worst = max(med["download-only"], med["upload-only"])
        out += [
            f"**a. Overlap** ({a['files']} files, {a['bytes'] / 1e9:.2f} GB in 50 records; medians of "
            f"{len([r for r in rows if r.get('kind') == 'bulk'])} interleaved trials):",
            "",
            "| run | seconds (median) | MB/s | all trials (s) | peak RSS MB (process / tree) | requests |",
            "|---|---|---|---|---|---|",
        ]
        for kind in ("download-only", "upload-only", "bulk"):
            rs = [r for r in rows if r.get("kind") == kind]
            trials = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            out.append(
                f"| {kind} | {med[kind]:.2f} | {a['bytes'] / med[kind] / 1e6:.0f} | {trials} | "
                f"{max(r['rss_mb'] for r in rs):.0f} / {max(r['tree_mb'] for r in rs):.0f} | "
                f"{rs[0].get('requests', '-')} |"
            )
        out += ["", f"bulk / max(download-only, upload-only) = {med['bulk']:.2f} / {worst:.2f} = "
                    f"**{med['bulk'] / worst:.2f}** (target <= 1.25)", ""]  # fmt: skip
    brows = {r["label"]: r for r in rows if r.get("part") == "b"}
    if brows:
        out += [
            "**b. Memory** (100 records; tiny files of 1-8 KiB; full bulk: download + upload):",
            "",
            "| run | files | zipped | seconds | peak RSS MB (ferry process) | peak RSS MB (tree: + zip workers) | "
            "requests |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, r in brows.items():
            out.append(
                f"| {label} | {r['files']} | {'yes' if r['zipped'] else 'no'} | {r['seconds']:.1f} | "
                f"{r['rss_mb']:.0f} | {r['tree_mb']:.0f} | {r['requests']} |"
            )
        if "b-1000" in brows and "b-10000" in brows:
            lo, hi = brows["b-1000"], brows["b-10000"]
            out += [
                "",
                f"RSS ratio 10,000 / 1,000 files (no zipping): process {hi['rss_mb'] / lo['rss_mb']:.2f}, "
                f"tree {hi['tree_mb'] / lo['tree_mb']:.2f} (target <= 1.3, and < 300 MB)",
            ]
        out.append("")
    for r in rows:
        if r.get("part") == "c":
            out += [
                f"**c. Re-run** of the finished 10,000-file bulk (same command, ledger, staging folder and "
                f"repository): **{r['seconds']:.1f} s**, {r['requests']} requests to the repository, "
                f"peak RSS {r['rss_mb']:.0f} MB; server afterwards: {r['server']}.",
                "",
            ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c")
    ap.add_argument("--repeat", type=int, default=2, help="trials of part a")
    ap.add_argument("--json", default="/tmp/ferry-bench-bulk.json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    from sandbox.stack import Sandbox, run_in_thread

    facts = machine()
    wd = workdir("bulk")
    a_recs = overlap_records() if "a" in parts else []
    small = tiny_records(972000, 100, 10, seed=1) if parts & {"b", "c"} else []
    large = tiny_records(973000, 100, 100, seed=2) if parts & {"b", "c"} else []
    a_result = None
    try:
        print(f"work dir {wd}; generating data...", file=sys.stderr)
        with run_in_thread(Sandbox(wd / "src", records=a_recs + small + large, scale=EXACT)) as sb:
            # The sandbox rewrote URIs, sizes and checksums: use its records.
            b = Bench(wd, sb.portal_url, sb.records)
            by = {str(r["recid"]): r for r in sb.records}
            if "a" in parts:
                a_result = part_a(b, [by[str(r["recid"])] for r in a_recs], args.repeat)
            if parts & {"b", "c"}:
                part_bc(b, [by[str(r["recid"])] for r in small], [by[str(r["recid"])] for r in large], "c" in parts)
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": b.rows, "a": a_result}, indent=1))
        print(report(facts, b.rows, a_result, " ".join(sys.argv[1:])))
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
