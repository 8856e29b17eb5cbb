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
b. Memory, 1,000 vs 10,000 tiny files (1-8 KiB), full ``ferry bulk`` (download + upload),
   default settings, two shapes:
   - zip-1000 / zip-10000: 100 records of 10 / 100 files. The default zip policy bundles
     them (more than 20 files, or 5+ files with a median under 1 MiB): one bundle and
     its manifest per record go up, but every file is still downloaded, verified, kept
     in the manifest and zipped.
   - flat-1000 / flat-10000: 250 / 2,500 records of 4 files (below the small-file rule's
     5 files, so nothing is zipped): every file is its own download, upload (4 requests)
     and ledger row -- the worst case for per-file and per-record state.
   (``limits.zip_threshold`` cannot switch the small-median rule off, hence the shapes.)
   Target: ratio <= 1.3 and < 300 MB.
c. Re-run. The exact same command as each 10,000-file run of b, again, after it
   finished: seconds and requests made to the repository.
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
    loadavg,
    machine,
    machine_line,
    measure,
    median,
    proc_cpu,
    sync,
    tail,
    workdir,
    write_config,
)

KiB = 1024


def overlap_records(seed: int = 7, shrink: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    recs = [bench_record("971000", [GiB // shrink], title="Benchmark: one 1 GiB file")]
    for i in range(1, 50):
        if i % 2:
            sizes = [rng.randint(8 * MiB, 32 * MiB) // shrink for _ in range(4)]
        else:
            sizes = [rng.randint(1 * MiB, 4 * MiB) // shrink for _ in range(5)]
        recs.append(bench_record(str(971000 + i), sizes))
    return recs


def tiny_records(base: int, count: int, files: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [bench_record(str(base + i), [rng.randint(KiB, 8 * KiB) for _ in range(files)]) for i in range(count)]


class Bench:
    def __init__(self, wd: Path, portal: str, all_records: list[dict[str, Any]], xrootd_pid: int | None) -> None:
        self.wd = wd
        self.xrootd_pid = xrootd_pid
        self.repo_pid: int | None = None  # the repository process of the current run
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
        load = loadavg()
        servers = proc_cpu(self.xrootd_pid) + proc_cpu(self.repo_pid)
        m = measure(cmd)
        servers = proc_cpu(self.xrootd_pid) + proc_cpu(self.repo_pid) - servers
        row = {"label": label, "seconds": m.wall, "rc": m.rc, "rss_mb": m.maxrss_mb, "tree_mb": m.tree_peak_mb}
        # CPU seconds of ferry (with its zip workers) and of the two servers during the run,
        # and the 1-minute load average before it (the machine is shared).
        row.update(cpu_ferry=m.cpu, cpu_servers=servers, load=load)
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


def server_check(repo: RepoProcess, recids: list[str], files: int | None) -> str:
    """Every recid once on the server, every file there completed with an md5 (``files`` of them)."""
    with urllib.request.urlopen(f"{repo.url}/_sandbox/state") as resp:
        state = json.loads(resp.read())
    by = state["by_recid"]
    once = sum(1 for r in recids if r in by and len(by[r]["ids"]) == 1)
    entries = [f for e in state["entities"] for f in e["draft_files"].values()]
    done = sum(1 for f in entries if f["status"] == "completed" and str(f.get("checksum") or "").startswith("md5:"))
    if once != len(recids) or done != len(entries) or (files is not None and done != files):
        raise RuntimeError(f"server holds {once}/{len(recids)} records once, {done}/{files} completed files")
    return f"{once} records once, {done} files completed with md5"


# --- part a -------------------------------------------------------------------------------


def part_a(b: Bench, recs: list[dict[str, Any]], repeat: int, *, strict: bool = True) -> dict[str, Any]:
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
                b.repo_pid = repo.proc.pid if repo.proc else None
                cfg = b.config(tag, repo)
                dest = ready if kind == "upload-only" else b.wd / tag
                cmd = b.bulk_cmd(cfg, records, listing, dest, b.wd / f"{tag}.ledger", b.wd / f"{tag}-stats")
                m = b.run(f"a {kind} #{trial}", cmd, kind=kind, bytes=total)
                b.rows[-1]["requests"] = repo.request_count()
                # strict: no record is zipped, so the server holds exactly the records' files.
                b.rows[-1]["server"] = server_check(repo, recids, nfiles if strict else None)
                assert m.rc == 0
            if kind == "bulk":
                shutil.rmtree(dest)
    rows = [r for r in b.rows if r.get("kind")]
    med = {k: median([r["seconds"] for r in rows if r["kind"] == k]) for k in kinds}
    return {"files": nfiles, "bytes": total, "medians": med}


# --- parts b and c ------------------------------------------------------------------------


def part_bc(b: Bench, scenarios: list[tuple[str, list[dict[str, Any]]]], do_c: bool) -> None:
    for name, recs in scenarios:
        recids = [str(r["recid"]) for r in recs]
        nfiles = sum(len(r["files"]) for r in recs)
        zipped = name.startswith("zip")
        records, listing = b.records_file(name, recids)
        with RepoProcess(b.wd / f"{name}-repo", dict(GENEROUS)) as repo:
            b.repo_pid = repo.proc.pid if repo.proc else None
            cfg = b.config(name, repo)
            dest, ledger, stats = b.wd / f"{name}-data", b.wd / f"{name}.ledger", b.wd / f"{name}-stats"
            cmd = b.bulk_cmd(cfg, records, listing, dest, ledger, stats)
            b.run(name, cmd, part="b", files=nfiles, records=len(recs), zipped=zipped)
            b.rows[-1]["requests"] = repo.request_count()
            b.rows[-1]["server"] = server_check(repo, recids, None if zipped else nfiles)
            if do_c and nfiles >= 10_000:
                before = repo.request_count()
                b.run(f"re-run of {name}", cmd, part="c", files=nfiles, records=len(recs), zipped=zipped)
                b.rows[-1]["requests"] = repo.request_count() - before
                b.rows[-1]["server"] = server_check(repo, recids, None if zipped else nfiles)
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
            "| run | seconds (median) | MB/s | all trials (s) | CPU s: ferry + servers (median) | "
            "CPU floor on 2 cores (s) | peak RSS MB (process / tree) | requests |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind in ("download-only", "upload-only", "bulk"):
            rs = [r for r in rows if r.get("kind") == kind]
            trials = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            fcpu, scpu = median([r["cpu_ferry"] for r in rs]), median([r["cpu_servers"] for r in rs])
            out.append(
                f"| {kind} | {med[kind]:.2f} | {a['bytes'] / med[kind] / 1e6:.0f} | {trials} | "
                f"{fcpu:.1f} + {scpu:.1f} | {(fcpu + scpu) / 2:.1f} | "
                f"{max(r['rss_mb'] for r in rs):.0f} / {max(r['tree_mb'] for r in rs):.0f} | "
                f"{rs[0].get('requests', '-')} |"
            )
        out += ["", f"bulk / max(download-only, upload-only) = {med['bulk']:.2f} / {worst:.2f} = "
                    f"**{med['bulk'] / worst:.2f}** (target <= 1.25)", ""]  # fmt: skip
    brows = {r["label"]: r for r in rows if r.get("part") == "b"}
    if brows:
        out += [
            "**b. Memory** (tiny files of 1-8 KiB; full bulk: download + upload; peak RSS of the ferry "
            "process and of its process tree, i.e. with the zip worker processes):",
            "",
            "| run | records | files | zipped | seconds | peak RSS MB (process) | peak RSS MB (tree) | requests |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, r in brows.items():
            out.append(
                f"| {label} | {r['records']} | {r['files']} | {'yes' if r['zipped'] else 'no'} | {r['seconds']:.1f} | "
                f"{r['rss_mb']:.0f} | {r['tree_mb']:.0f} | {r['requests']} |"
            )
        out.append("")
        for kind in ("zip", "flat"):
            lo, hi = brows.get(f"{kind}-1000"), brows.get(f"{kind}-10000")
            if lo and hi:
                out.append(
                    f"- {kind}: RSS ratio 10,000 / 1,000 files: process **{hi['rss_mb'] / lo['rss_mb']:.2f}** "
                    f"({lo['rss_mb']:.0f} -> {hi['rss_mb']:.0f} MB), tree {hi['tree_mb'] / lo['tree_mb']:.2f} "
                    f"({lo['tree_mb']:.0f} -> {hi['tree_mb']:.0f} MB); target <= 1.3 and < 300 MB"
                )
        out.append("")
    for r in rows:
        if r.get("part") == "c":
            out += [
                f"**c. {r['label']}** ({r['records']} records, {r['files']} files; same command, ledger, staging "
                f"folder and repository): **{r['seconds']:.1f} s**, {r['requests']} requests to the repository, "
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
    ap.add_argument("--smoke", action="store_true", help="a quick check of the harness: 1/16 sizes, 10 records in b")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    from sandbox.stack import Sandbox, run_in_thread

    facts = machine()
    wd = workdir("bulk")
    shrink, scale = (16, 10) if args.smoke else (1, 1)
    a_recs = overlap_records(shrink=shrink) if "a" in parts else []
    scenarios: list[tuple[str, list[dict[str, Any]]]] = []
    if parts & {"b", "c"}:
        # zip-*: 100 records of 10 or 100 tiny files (zipped by the default policy: one
        # bundle + manifest per record). flat-*: records of 4 tiny files (below the
        # small-file zip rule's 5), so every file is its own download, upload, ledger row.
        scenarios = [
            ("zip-1000", tiny_records(972000, 100 // scale, 10, seed=1)),
            ("zip-10000", tiny_records(973000, 100 // scale, 100, seed=2)),
            ("flat-1000", tiny_records(974000, 250 // scale, 4, seed=3)),
            ("flat-10000", tiny_records(975000, 2500 // scale, 4, seed=4)),
        ]
    all_b = [r for _, recs in scenarios for r in recs]
    a_result = None
    try:
        print(f"work dir {wd}; generating data...", file=sys.stderr)
        with run_in_thread(Sandbox(wd / "src", records=a_recs + all_b, scale=EXACT)) as sb:
            # The sandbox rewrote URIs, sizes and checksums: use its records.
            b = Bench(wd, sb.portal_url, sb.records, sb.xrootd.pid if sb.xrootd else None)
            by = {str(r["recid"]): r for r in sb.records}
            if "a" in parts:
                a_result = part_a(b, [by[str(r["recid"])] for r in a_recs], args.repeat, strict=not args.smoke)
            if scenarios:
                mine = [(name, [by[str(r["recid"])] for r in recs]) for name, recs in scenarios]
                part_bc(b, mine, "c" in parts)
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": b.rows, "a": a_result}, indent=1))
        print(report(facts, b.rows, a_result, " ".join(sys.argv[1:])))
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
