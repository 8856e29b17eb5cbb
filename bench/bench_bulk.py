"""Benchmark: ``ferry bulk`` -- stage overlap, memory vs number of files, re-run overhead.

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_bulk.py [--parts a,b,c] [--repeat 3] [--b-repeat 3]

All against the sandbox on loopback: XRootD serving generated data (sandbox.datagen,
deterministic pseudo-random bytes) and the sandbox repository as its own process (rate
limits off). Default ferry limits unless said otherwise. Every ferry run is a separate
process under ``/usr/bin/time -v``; peak RSS is reported two ways: the largest single
process (time -v) and the sum over the process tree (ferry + zip workers), polled from
/proc every 50 ms.

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
   the SAME number of records (100) with 10x the files per record, two shapes:
   - files-1000 / files-10000: 100 records of 10 / 100 files, every file uploaded on its
     own (not zipped): ``[limits] zip_threshold = 1000``, ``zip_small_median_bytes = 0``
     (the small-median zip rule off), the target's ``max_files_per_record = 1000`` and the
     sandbox repository's ``max_files = 1000``. Every file is its own download, upload
     (init, content, commit, read-back) and ledger row: the shape the target is about.
   - zip-1000 / zip-10000: the same shape with default limits, so each record is zipped
     (one bundle + its manifest go up; every file is still downloaded, verified, kept in
     the manifest and zipped).
   ``--b-repeat`` interleaved trials (fresh folder, ledger and repository each); medians.
   Target: ratio <= 1.3 and < 300 MB.
c. Re-run. The exact same command as each 10,000-file run of b, again, after it
   finished (same ledger, folder, repository): seconds and requests to the repository.

Every run records the 1/5/15-minute load averages before and after (the machine is
shared); run the whole script under ``flock /tmp/ferry-bench.lock`` so that benchmarks
of other helpers never run at the same time.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
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
    loadavg3,
    machine,
    machine_cpu,
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
        self.ferry: list[str] = [FERRY]  # --ferry: another way to start ferry for the bulk runs (profilers)

    def records_file(self, name: str, recids: list[str]) -> tuple[Path, Path]:
        """A records file with only these records (the cache loads all of it) and a recid list."""
        path = self.wd / f"{name}.records.json"
        path.write_text(json.dumps([self.by_recid[r] for r in recids]))
        listing = self.wd / f"{name}.recids"
        listing.write_text("\n".join(recids) + "\n")
        return path, listing

    def config(
        self,
        name: str,
        repo: RepoProcess | None,
        limits: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
    ) -> Path:
        path = self.wd / f"{name}.toml"
        if repo is None:
            path.write_text(f'[source.cernopendata]\nportal = "{self.portal}"\n')
            return path
        return write_config(path, portal=self.portal, repo=repo, limits=limits, target=target)

    def run(self, label: str, cmd: list[str], **extra: Any) -> Measured:
        sync()
        load, load3 = loadavg(), loadavg3()
        servers = proc_cpu(self.xrootd_pid) + proc_cpu(self.repo_pid)
        busy = machine_cpu()
        m = measure(cmd)
        busy = machine_cpu() - busy
        servers = proc_cpu(self.xrootd_pid) + proc_cpu(self.repo_pid) - servers
        row = {"label": label, "seconds": m.wall, "rc": m.rc, "rss_mb": m.maxrss_mb, "tree_mb": m.tree_peak_mb}
        # CPU seconds of ferry (with its zip workers) and of the two servers during the run,
        # and the 1-minute load average before it (the machine is shared).
        row.update(cpu_ferry=m.cpu, cpu_servers=servers, load=load, load_before=load3, load_after=loadavg3())
        # CPU the machine spent on anything else during the run (other helpers; ~0 when quiet;
        # includes this harness's /proc polling and the kernel's writeback threads).
        row["cpu_other"] = busy - m.cpu - servers
        row.update(extra)
        self.rows.append(row)
        print(
            f"{label}: {m.wall:.2f} s, rc {m.rc}, RSS {m.maxrss_mb:.0f} MB (tree {m.tree_peak_mb:.0f} MB), "
            f"CPU {m.cpu:.1f} + servers {servers:.1f} s, other {row['cpu_other']:.1f} s, "
            f"load {load3} -> {row['load_after']} " + " ".join(f"{k}={v}" for k, v in extra.items()),
            file=sys.stderr,
        )
        if m.rc != 0:
            raise RuntimeError(f"{label} failed ({m.rc}): {' '.join(cmd)}\n{tail(m.stderr, 30)}")
        return m

    def bulk_cmd(self, cfg: Path, records: Path, recids: Path, dest: Path, ledger: Path, stats: Path) -> list[str]:
        return [
            *self.ferry, "--config", str(cfg), "bulk", "--recids", str(recids), "--records", str(records),
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


# Files uploaded one by one: the zip rules off (threshold above the files of a record, the
# small-median rule at 0) and a target (and sandbox repository) allowing 1,000 files.
UNZIPPED_LIMITS = {"zip_threshold": 1000, "zip_small_median_bytes": 0}
UNZIPPED_TARGET = {"max_files_per_record": 1000}


def part_bc(
    b: Bench, scenarios: list[tuple[str, list[dict[str, Any]]]], shapes: list[str], repeat: int, do_c: bool
) -> None:
    """Every (shape, size) once per trial, interleaved; re-run (c) after each 10,000-file run."""
    for trial in range(1, repeat + 1):
        for shape in shapes:
            for size, recs in scenarios:
                name = f"{shape}-{size}"
                recids = [str(r["recid"]) for r in recs]
                nfiles = sum(len(r["files"]) for r in recs)
                zipped = shape == "zip"
                records, listing = b.records_file(name, recids)
                tag = f"{name}-{trial}"
                knobs = dict(GENEROUS) if zipped else dict(GENEROUS, max_files=1000)
                with RepoProcess(b.wd / f"{tag}-repo", knobs) as repo:
                    b.repo_pid = repo.proc.pid if repo.proc else None
                    if zipped:
                        cfg = b.config(tag, repo)
                    else:
                        cfg = b.config(tag, repo, limits=UNZIPPED_LIMITS, target=UNZIPPED_TARGET)
                    dest, ledger, stats = b.wd / f"{tag}-data", b.wd / f"{tag}.ledger", b.wd / f"{tag}-stats"
                    cmd = b.bulk_cmd(cfg, records, listing, dest, ledger, stats)
                    info = {"part": "b", "name": name, "trial": trial, "files": nfiles, "records": len(recs)}
                    b.run(f"{name} #{trial}", cmd, zipped=zipped, **info)
                    b.rows[-1]["requests"] = repo.request_count()
                    # Unzipped: the server must hold exactly the records' files.
                    b.rows[-1]["server"] = server_check(repo, recids, None if zipped else nfiles)
                    if do_c and nfiles >= 10_000:
                        before = repo.request_count()
                        info["part"] = "c"
                        b.run(f"re-run of {name} #{trial}", cmd, zipped=zipped, **info)
                        b.rows[-1]["requests"] = repo.request_count() - before
                        b.rows[-1]["server"] = server_check(repo, recids, None if zipped else nfiles)
                shutil.rmtree(dest, ignore_errors=True)
                shutil.rmtree(stats, ignore_errors=True)


# --- report -------------------------------------------------------------------------------


def report(facts: dict[str, Any], rows: list[dict[str, Any]], a: dict[str, Any] | None, argv: str) -> str:
    out = [
        f"Command: `flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_bulk.py {argv}`  ",
        f"Machine: {machine_line(facts)}  ",
        f"Load average (1, 5, 15 min) before: {facts.get('load_before')}; after: {facts.get('load_after')}",
        "",
    ]
    if a is not None:
        med = a["medians"]
        worst = max(med["download-only"], med["upload-only"])
        out += [
            f"**a. Overlap** ({a['files']} files, {a['bytes'] / 1e9:.2f} GB in 50 records; medians of "
            f"{len([r for r in rows if r.get('kind') == 'bulk'])} interleaved trials):",
            "",
            "| run | seconds (median) | MB/s | all trials (s) | CPU s: ferry + servers (median) | "
            "CPU floor on 2 cores (s) | peak RSS MB (process / tree) | requests | 1-min load before each trial | "
            "CPU s of other processes, each trial |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind in ("download-only", "upload-only", "bulk"):
            rs = [r for r in rows if r.get("kind") == kind]
            trials = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            fcpu, scpu = median([r["cpu_ferry"] for r in rs]), median([r["cpu_servers"] for r in rs])
            out.append(
                f"| {kind} | {med[kind]:.2f} | {a['bytes'] / med[kind] / 1e6:.0f} | {trials} | "
                f"{fcpu:.1f} + {scpu:.1f} | {(fcpu + scpu) / 2:.1f} | "
                f"{max(r['rss_mb'] for r in rs):.0f} / {max(r['tree_mb'] for r in rs):.0f} | "
                f"{rs[0].get('requests', '-')} | {', '.join(f'{v:.2f}' for v in (x['load'] for x in rs))} | "
                f"{', '.join(f'{v:.1f}' for v in (x['cpu_other'] for x in rs))} |"
            )
        out += ["", f"bulk / max(download-only, upload-only) = {med['bulk']:.2f} / {worst:.2f} = "
                    f"**{med['bulk'] / worst:.2f}** (target <= 1.25)", ""]  # fmt: skip
    brows = [r for r in rows if r.get("part") == "b"]
    if brows:
        out += [
            "**b. Memory** (100 records, tiny files of 1-8 KiB; full bulk: download + upload; peak RSS of "
            "the ferry process (time -v) and of its process tree, i.e. with zip workers; medians of "
            f"{max(r['trial'] for r in brows)} interleaved trials):",
            "",
            "| run | files | zipped | seconds | CPU s ferry + servers | peak RSS MB process (trials) | "
            "peak RSS MB tree | requests | load before -> after (1st trial) | CPU s other processes (trials) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        names = list(dict.fromkeys(r["name"] for r in brows))
        meds: dict[str, tuple[float, float]] = {}
        for name in names:
            rs = [r for r in brows if r["name"] == name]
            rss, tree = median([r["rss_mb"] for r in rs]), median([r["tree_mb"] for r in rs])
            meds[name] = (rss, tree)
            out.append(
                f"| {name} | {rs[0]['files']} | {'yes' if rs[0]['zipped'] else 'no'} | "
                f"{median([r['seconds'] for r in rs]):.1f} | {median([r['cpu_ferry'] for r in rs]):.1f} + "
                f"{median([r['cpu_servers'] for r in rs]):.1f} | {rss:.0f} "
                f"({', '.join(f'{v:.0f}' for v in (r['rss_mb'] for r in rs))}) | {tree:.0f} | {rs[0]['requests']} | "
                f"{rs[0]['load_before']} -> {rs[0]['load_after']} | "
                f"{', '.join(f'{v:.1f}' for v in (x['cpu_other'] for x in rs))} |"
            )
        out.append("")
        for shape in ("files", "zip"):
            lo, hi = meds.get(f"{shape}-1000"), meds.get(f"{shape}-10000")
            if lo and hi:
                out.append(
                    f"- {shape}: median peak RSS 10,000 / 1,000 files: process **{hi[0] / lo[0]:.2f}** "
                    f"({lo[0]:.0f} -> {hi[0]:.0f} MB), tree {hi[1] / lo[1]:.2f} ({lo[1]:.0f} -> {hi[1]:.0f} MB); "
                    "target <= 1.3 and < 300 MB"
                )
        out.append("")
    crows = [r for r in rows if r.get("part") == "c"]
    for name in dict.fromkeys(r["name"] for r in crows):
        rs = [r for r in crows if r["name"] == name]
        out += [
            f"**c. re-run of {name}** ({rs[0]['records']} records, {rs[0]['files']} files; same command, ledger, "
            f"staging folder and repository): median **{median([r['seconds'] for r in rs]):.1f} s** "
            f"({', '.join(f'{v:.1f}' for v in (r['seconds'] for r in rs))}), {rs[0]['requests']} requests to the "
            f"repository, CPU {median([r['cpu_ferry'] for r in rs]):.1f} s, peak RSS "
            f"{median([r['rss_mb'] for r in rs]):.0f} MB, CPU of other processes "
            f"{', '.join(f'{v:.1f}' for v in (x['cpu_other'] for x in rs))} s; server afterwards: {rs[-1]['server']}.",
            "",
        ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c")
    ap.add_argument("--repeat", type=int, default=3, help="trials of part a")
    ap.add_argument("--b-repeat", type=int, default=3, help="trials of parts b and c")
    ap.add_argument("--shapes", default="files,zip", help="part b shapes: files (not zipped), zip")
    ap.add_argument("--json", default="/tmp/ferry-bench-bulk.json")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--ferry", help="command that starts ferry for the bulk runs, e.g. 'python trace.py' (profiling)")
    ap.add_argument("--smoke", action="store_true", help="a quick check of the harness: 1/16 sizes, 10 records in b")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    from sandbox.stack import Sandbox, run_in_thread

    facts = machine()
    facts["load_before"] = loadavg3()
    wd = workdir("bulk")
    shrink, scale = (16, 10) if args.smoke else (1, 1)
    a_recs = overlap_records(shrink=shrink) if "a" in parts else []
    scenarios: list[tuple[str, list[dict[str, Any]]]] = []
    if parts & {"b", "c"}:
        # 100 records of 10 or 100 tiny files; the shapes (zipped or not) are limits only.
        scenarios = [
            ("1000", tiny_records(972000, 100 // scale, 10, seed=1)),
            ("10000", tiny_records(973000, 100 // scale, 100, seed=2)),
        ]
    all_b = [r for _, recs in scenarios for r in recs]
    a_result = None
    try:
        print(f"work dir {wd}; generating data...", file=sys.stderr)
        with run_in_thread(Sandbox(wd / "src", records=a_recs + all_b, scale=EXACT)) as sb:
            # The sandbox rewrote URIs, sizes and checksums: use its records.
            b = Bench(wd, sb.portal_url, sb.records, sb.xrootd.pid if sb.xrootd else None)
            if args.ferry:
                b.ferry = shlex.split(args.ferry)
            by = {str(r["recid"]): r for r in sb.records}
            if "a" in parts:
                a_result = part_a(b, [by[str(r["recid"])] for r in a_recs], args.repeat, strict=not args.smoke)
            if scenarios:
                mine = [(name, [by[str(r["recid"])] for r in recs]) for name, recs in scenarios]
                part_bc(b, mine, args.shapes.split(","), args.b_repeat, "c" in parts)
        facts["load_after"] = loadavg3()
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": b.rows, "a": a_result}, indent=1))
        print(report(facts, b.rows, a_result, " ".join(sys.argv[1:])))
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
