"""Benchmark: ``ferry bulk --cluster local:N`` on a latency-bound run, 1, 2 and 4 workers.

    flock /tmp/ferry-bench.lock .venv/bin/python bench/bench_cluster.py [--records 40] [--latency-ms 200] [--repeat 1]

The sandbox repository answers every API request after ``--latency-ms`` (default 200 ms)
and reads each upload body at ``--link-kib-s`` per connection (default 1024 KiB/s, a
wide-area link), so a record's ~10 sequential requests and its 1.5 MiB take seconds while
the CPU idles: what limits a run
is how many records are in flight, which is what more workers add. Each worker runs
``--records-in-flight`` records at once (default 2, so that 1 worker is far from the
machine's 2 cores). Measured, each against a FRESH repository and staging folder: the
same ``ferry bulk`` without ``--cluster`` (same records-in-flight), then ``--cluster
local:1``, ``local:2`` and ``local:4``. Goals (issue 17): >= 1.8x at 2 workers and >= 3.2x
at 4 against 1 worker; 1 worker within 10% of the run without --cluster.
Every run is checked on the server: each record once, every file completed with md5.

CPU (the table's CPU column, and ``CPU`` in each run's stderr line): user + system seconds of
every process of the run, from their rusage, not sampled. The client and what it waits for
come from ``/usr/bin/time -v``; the local workers are not among them: they are forked from a
multiprocessing fork server (``pipeline.runners.forkserver``), which reaps them but outlives
the client and so is reaped by nobody up the tree. ``benchlib.measure`` makes this process
a child subreaper while the command runs, so the fork server is reparented here when the
client exits; it is waited for with ``wait4``, whose rusage holds the fork server and the
workers it reaped (the column's "of it" part, with any other such orphan, e.g. the
multiprocessing resource tracker). A process of the run still alive 20 s after the client
exited is not counted, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bulk import Bench, server_check
from benchlib import EXACT, GENEROUS, RepoProcess, bench_record, loadavg3, machine, machine_line, workdir


def records(count: int) -> list[dict[str, Any]]:
    return [bench_record(str(975000 + i), [1024 * 1024 + i, 512 * 1024]) for i in range(count)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--link-kib-s", type=float, default=1024.0)
    ap.add_argument("--records-in-flight", type=int, default=2)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    from sandbox.stack import Sandbox, run_in_thread

    facts = machine()
    facts["load_before"] = loadavg3()
    wd = workdir("cluster")
    recs = records(args.records)
    rows: list[dict[str, Any]] = []
    knobs = {**GENEROUS, "latency_ms": args.latency_ms, "body_bytes_per_s": args.link_kib_s * 1024}
    limits = {"records_in_flight": args.records_in_flight, "zip_threshold": 1000, "zip_small_median_bytes": 0}
    try:
        with run_in_thread(Sandbox(wd / "src", records=recs, scale=EXACT)) as sb:
            b = Bench(wd, sb.portal_url, sb.records, sb.xrootd.pid if sb.xrootd else None)
            recids = [str(r["recid"]) for r in sb.records]
            records_file, listing = b.records_file("all", recids)
            for label in ["local", *(f"local:{n}" for n in args.workers.split(","))]:
                run_dir = wd / label.replace(":", "-")
                with RepoProcess(run_dir / "repo", knobs) as repo:
                    b.repo_pid = repo.proc.pid if repo.proc else None
                    cfg = b.config(label.replace(":", "-"), repo, limits=limits)
                    cmd = b.bulk_cmd(
                        cfg, records_file, listing, run_dir / "dest", run_dir / "ledger.sqlite", run_dir / "stats"
                    )
                    if label != "local":
                        cmd += ["--cluster", label]
                    m = b.run(label, cmd)
                    check = server_check(repo, recids, None)
                    timed = b.rows[-1]  # Bench.run's row: the servers' CPU and everyone else's
                    rows.append(
                        {
                            "label": label,
                            "seconds": m.wall,
                            "check": check,
                            "requests": repo.request_count(),
                            "cpu": m.cpu,
                            "cpu_adopted": m.cpu_adopted,
                            "adopted": m.adopted,
                            "left_running": m.left_running,
                            "cpu_servers": timed["cpu_servers"],
                            "cpu_other": timed["cpu_other"],
                        }
                    )
        # The base of the speed-ups: 1 worker, or the fewest asked for (--workers without 1).
        base = next((r for r in rows if r["label"] == "local:1"), rows[1])
        one = base["seconds"]
        plain = next(r["seconds"] for r in rows if r["label"] == "local")
        lines = [machine_line(facts), f"command: bench/bench_cluster.py {' '.join(sys.argv[1:])}", ""]
        lines.append(
            f"| run | wall s | records/s | speed-up vs {base['label']} | CPU s: ferry (of it fork server + workers) "
            "+ servers | CPU s other processes | server check |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            missed = f", {r['left_running']} still running: not counted" if r["left_running"] else ""
            lines.append(
                f"| {r['label']} | {r['seconds']:.1f} | {args.records / r['seconds']:.2f} | "
                f"{one / r['seconds']:.2f}x | {r['cpu']:.1f} ({r['cpu_adopted']:.1f}{missed}) + "
                f"{r['cpu_servers']:.1f} | {r['cpu_other']:.1f} | {r['check']} |"
            )
        lines.append(
            f"\n{base['label']} vs no --cluster: {one / plain:.2f}x the time; "
            f"load {facts['load_before']} -> {loadavg3()}"
        )
        print("\n".join(lines))
        Path("/tmp/ferry-bench-cluster.json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
