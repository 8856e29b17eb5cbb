"""Benchmark `ferry download` against xrdcp on the same local xrootd, in the same run.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/bench_download.py [--repeat 3] [--cases big,medium,small]
        [--cernopendata-client] [--no-md5] [--keep]

Cases (files generated once in /tmp/ferry-bench-download-*, random bytes):

- big:    1 x 1 GiB       ferry vs ``xrdcp --cksum adler32:source``
- medium: 500 x 2 MiB     ferry vs ``xrdcp -r --parallel 8 --cksum adler32:source``
- small:  5,000 x 4 KiB   the same xrdcp command, compared in files/s

Both sides write to a fresh folder on the same disk and verify adler32 against the
source (xrdcp asks the server for it; ferry compares with the record, and computes md5
too). Runs alternate (ferry, xrdcp, ferry, ...); ``sync`` before each so one run's
writeback does not slow the next. Peak RSS comes from ``/usr/bin/time -v``.
``--cernopendata-client`` also times the official client (``download-files --protocol
xrootd``) on the medium record, pointed at the portal stand-in with ``--server``; it is
installed into a throwaway venv.

Prints a Markdown table and writes the raw numbers as JSON next to the data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import FERRY, GiB, Measured, MiB, machine, machine_line, measure, median, sync, workdir

import sandbox.xrootd
from sandbox.xrootd import XRootDServer

_render_config = sandbox.xrootd.render_config


def _bench_config(**kwargs: Any) -> str:
    """The sandbox's xrootd config, allowing 16 concurrent checksum computations: with the
    default, ``xrdcp -r --parallel 8 --cksum adler32:source`` fails some files with
    "[3012] Got an error while querying the checksum"."""
    text: str = _render_config(**kwargs)
    return text.replace("xrootd.chksum adler32", "xrootd.chksum max 16 adler32")


sandbox.xrootd.render_config = _bench_config

CASES: dict[str, tuple[str, int, int]] = {
    # name: (recid, files, bytes per file)
    "big": ("999101", 1, GiB),
    "medium": ("999102", 500, 2 * MiB),
    "small": ("999103", 5000, 4096),
}
BASE = "/eos/opendata/bench"


def generate(root: Path, name: str, count: int, size: int) -> list[dict[str, Any]]:
    """Write ``count`` random files of ``size`` bytes; return their fixture-format entries."""
    folder = root / BASE.lstrip("/") / name
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    block = 8 * MiB
    for i in range(count):
        path = folder / f"f{i:05d}.dat"
        value = 1
        with open(path, "wb") as fh:
            left = size
            while left:
                data = os.urandom(min(block, left))
                value = zlib.adler32(data, value)
                fh.write(data)
                left -= len(data)
        entries.append({"path": f"{BASE}/{name}/{path.name}", "size": size, "checksum": f"adler32:{value:08x}"})
    return entries


def records(server_url: str, generated: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for name, entries in generated.items():
        recid = CASES[name][0]
        out.append(
            {
                "recid": recid,
                "title": f"ferry download benchmark: {name}",
                "experiment": ["BENCH"],
                "files": [
                    {"uri": f"{server_url}/{e['path']}", "size": e["size"], "checksum": e["checksum"]} for e in entries
                ],
            }
        )
    return out


def prepare_server_checksums(root: Path, server: XRootDServer, names: list[str]) -> None:
    """``--server-checksums stored``: let xrootd store each file's adler32 (xattr
    ``XrdCks.adler32``) and compute it once now, as EOS keeps checksums as metadata:
    ``--cksum adler32:source`` then costs xrdcp a lookup, not a second read of the file on
    the server (which shares our two cores). Conservative for ferry, which never asks."""
    from XRootD.client import FileSystem
    from XRootD.client.flags import QueryCode

    user = server.user
    for name in names:
        for path in (root / BASE.lstrip("/") / name).iterdir():
            if user:
                shutil.chown(path, user)
    fs = FileSystem(server.url)
    for name in names:
        for path in sorted((root / BASE.lstrip("/") / name).iterdir()):
            status, _ = fs.query(QueryCode.CHECKSUM, f"{BASE}/{name}/{path.name}")
            if not status.ok:
                raise SystemExit(f"xrootd cannot checksum {path}: {status.message}")


def run_ferry(records_file: Path, recid: str, dest: Path, extra: list[str]) -> Measured:
    shutil.rmtree(dest, ignore_errors=True)
    sync()
    cmd = [FERRY, "download", "--records", str(records_file), "--dest", str(dest), *extra, recid]
    return measure(cmd)


def run_xrdcp(server_url: str, name: str, count: int, dest: Path) -> Measured:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    sync()
    if count == 1:
        src = f"{server_url}/{BASE}/{name}/f00000.dat"
        cmd = ["xrdcp", "--nopbar", "--cksum", "adler32:source", "-f", src, str(dest / "f00000.dat")]
    else:
        src = f"{server_url}/{BASE}/{name}/"
        cmd = ["xrdcp", "--nopbar", "-r", "--parallel", "8", "--cksum", "adler32:source", src, str(dest)]
    return measure(cmd)


def cpu_seconds(result: Measured) -> float:
    """User + system CPU seconds of the command, from ``/usr/bin/time -v``."""
    total = 0.0
    for line in result.stderr.splitlines():
        if "User time (seconds)" in line or "System time (seconds)" in line:
            total += float(line.rsplit(":", 1)[1])
    return total


def check(result: Measured, what: str, dest: Path, count: int) -> None:
    if result.rc != 0:
        raise SystemExit(f"{what} failed (exit {result.rc}):\n{result.stderr[-3000:]}")
    got = sum(1 for p in dest.rglob("*") if p.is_file() and ".ferry" not in p.parts)
    if got != count:
        raise SystemExit(f"{what}: {got} files in {dest}, expected {count}")


def cernopendata_client(work: Path, records_list: list[dict[str, Any]], root: Path, recid: str) -> dict[str, Any]:
    """Time the official client on one record through the portal stand-in (best effort)."""
    venv = work / "venv-cod"
    pip_log = work / "pip-cod.log"
    if not (venv / "bin" / "cernopendata-client").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        with open(pip_log, "w") as log:
            rc = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "cernopendata-client", "xrootd"],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc != 0:
            return {"installed": False, "log": pip_log.read_text()[-2000:]}
    import asyncio

    from sandbox.portal import start_portal

    ready = threading.Event()
    state: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            portal = await start_portal(records_list, data_root=root)
            state["url"] = portal.url
            state["stop"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()
            await portal.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    out: dict[str, Any] = {"installed": True, "runs": {}}
    try:
        # Its xrootd engine always fetches from root://eospublic.cern.ch/ (config.SERVER_ROOT_URI,
        # DownloaderXrootd.file_downloader): it cannot be pointed at a local server. Tried once
        # to record that; its HTTP engine follows --server and is timed against ferry --protocol https.
        for protocol in ("xrootd", "http"):
            dest = work / f"out-cod-{protocol}"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            sync()
            cmd = [
                str(venv / "bin" / "cernopendata-client"),
                "download-files",
                "--server",
                state["url"],
                "--recid",
                recid,
                "--protocol",
                protocol,
                "--verify",
                "--retry-limit",
                "1",
            ]
            # measure() runs from the repository root; the client writes into its working folder.
            result = measure(["sh", "-c", 'cd "$0" && shift && exec "$@"', str(dest), "--", *cmd])
            out["runs"][protocol] = {
                "cmd": " ".join(cmd),
                "rc": result.rc,
                "wall": round(result.wall, 3),
                "peak_rss_MB": round(result.maxrss_mb, 1),
                "cpu_s": round(cpu_seconds(result), 2),
                "files": sum(1 for p in dest.rglob("*") if p.is_file()),
                "stdout_tail": result.stdout[-400:],
                "stderr_tail": result.stderr.split("\tCommand being timed")[0][-600:],
            }
        dest = work / "out-ferry-https"
        shutil.rmtree(dest, ignore_errors=True)
        sync()
        records_file = work / "records.json"
        cmd = [FERRY, "download", "--records", str(records_file), "--protocol", "https"]
        cmd += ["--https-base", state["url"], "--dest", str(dest), recid]
        result = measure(cmd)
        out["runs"]["ferry-https"] = {
            "cmd": " ".join(cmd),
            "rc": result.rc,
            "wall": round(result.wall, 3),
            "peak_rss_MB": round(result.maxrss_mb, 1),
            "cpu_s": round(cpu_seconds(result), 2),
            "files": sum(1 for p in (dest / recid).iterdir() if p.is_file()) if (dest / recid).is_dir() else 0,
        }
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)
    return out


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="big,medium,small")
    parser.add_argument("--cernopendata-client", action="store_true")
    parser.add_argument(
        "--server-checksums",
        choices=["stored", "computed"],
        default="stored",
        help="stored: xrootd keeps adler32 per file, as EOS does (default); computed: the sandbox as shipped",
    )
    parser.add_argument(
        "--no-md5",
        action="store_true",
        help="run ferry with --no-md5 (source checksum only; md5 left to the upload)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated data and downloads")
    parser.add_argument("--workdir", help="reuse this folder (data generated once)")
    parser.add_argument(
        "--dest-root",
        help="write both tools' downloads under this folder (default: the workdir). "
        "/dev/shm (tmpfs) takes the disk out: on this VM's ext4 (no journal) creating files "
        "right after deleting thousands scans the recently deleted inodes, which dominates "
        "and varies 0.1-2 s per 5,000 files for any tool",
    )
    return parser.parse_args()


def _generated(work: Path, root: Path, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The cases' files, generated once per workdir (their list kept in generated.json)."""
    gen_file = work / "generated.json"
    generated: dict[str, list[dict[str, Any]]] = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    for name in names:
        if name not in generated:
            _, count, size = CASES[name]
            t0 = time.perf_counter()
            generated[name] = generate(root, name, count, size)
            print(f"generated {name}: {count} x {size} bytes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            gen_file.write_text(json.dumps(generated))
    return generated


def _set_server_checksums(mode: str, root: Path, server: XRootDServer, names: list[str]) -> None:
    if mode == "stored":
        t0 = time.perf_counter()
        prepare_server_checksums(root, server, names)
        print(f"server checksums stored in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return
    # The sandbox as shipped: files owned by root, xrootd cannot keep checksums, so
    # every `query checksum` re-reads the file on the server.
    for name in names:
        for path in (root / BASE.lstrip("/") / name).iterdir():
            shutil.chown(path, "root")


def _run_case(
    name: str, args: argparse.Namespace, records_file: Path, server: XRootDServer, dest_root: Path
) -> dict[str, Any]:
    """One case: ``--repeat`` alternating ferry and xrdcp runs, summarised."""
    recid, count, size = CASES[name]
    runs: dict[str, list[Measured]] = {"ferry": [], "xrdcp": []}
    xrdcp_failures = 0
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        dest = dest_root / "out-ferry"
        r = run_ferry(records_file, recid, dest, ["--no-md5"] if args.no_md5 else [])
        check(r, "ferry", dest / recid, count)
        runs["ferry"].append(r)
        dest = dest_root / "out-xrdcp"
        r = run_xrdcp(server.url, name, count, dest)
        while r.rc != 0 and "querying the checksum" in r.stderr and xrdcp_failures < 5:
            # Under load, the server sometimes fails a checksum query ([3012]).
            # Count it, and time a clean run instead.
            xrdcp_failures += 1
            r = run_xrdcp(server.url, name, count, dest)
        check(r, "xrdcp", dest, count)
        runs["xrdcp"].append(r)
        print(f"{name}: ferry {runs['ferry'][-1].wall:.2f} s, xrdcp {runs['xrdcp'][-1].wall:.2f} s", file=sys.stderr)
    total = count * size
    summary: dict[str, Any] = {
        "files": count,
        "bytes": total,
        "xrdcp_failed_runs": xrdcp_failures,
        "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    for tool, measured in runs.items():
        summary[tool] = _tool_summary(measured, count, total)
    summary["ratio_median"] = round(summary["xrdcp"]["median_wall"] / summary["ferry"]["median_wall"], 2)
    summary["ratio_best"] = round(summary["xrdcp"]["best_wall"] / summary["ferry"]["best_wall"], 2)
    return summary


def _tool_summary(measured: list[Measured], count: int, total: int) -> dict[str, Any]:
    walls = [m.wall for m in measured]
    return {
        "cmd": " ".join(measured[0].cmd),
        "walls": [round(w, 3) for w in walls],
        "median_wall": round(median(walls), 3),
        "best_wall": round(min(walls), 3),
        "median_MBps": round(total / median(walls) / 1e6, 1),
        "median_files_per_s": round(count / median(walls), 1),
        "peak_rss_MB": round(max(m.maxrss_mb for m in measured), 1),
        "median_cpu_s": round(median([cpu_seconds(m) for m in measured]), 2),
    }


def _run_cernopendata_client(work: Path, root: Path, recs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    name = "medium" if "medium" in names else names[0]
    rec = next(r for r in recs if r["recid"] == CASES[name][0])
    # The client maps only root://eospublic.cern.ch/ URIs to its --server for HTTP:
    # the portal stand-in serves this record with the public host in its URIs.
    public = "root://eospublic.cern.ch/"
    rec = {**rec, "files": [{**f, "uri": public + "/" + f["uri"].split("//", 2)[2]} for f in rec["files"]]}
    return {"case": name, **cernopendata_client(work, [rec], root, rec["recid"])}


def _print_report(results: dict[str, Any], args: argparse.Namespace, work: Path, dest_root: Path) -> None:
    print(f"\nMachine: {machine_line(results['machine'])}; results in {work / 'results.json'}\n")
    print(
        "| case | ferry median (best) | xrdcp median (best) | ratio median (best) | ferry peak RSS | xrdcp peak RSS |"
    )
    print("|---|---|---|---|---|---|")
    for name, s in results["cases"].items():
        f, x = s["ferry"], s["xrdcp"]
        unit = "files/s" if name == "small" else "MB/s"
        key = "median_files_per_s" if name == "small" else "median_MBps"
        best = s["files"] if name == "small" else s["bytes"] / 1e6
        ferry_cell = f"{f['median_wall']:.2f} s = {f[key]:.0f} {unit} ({best / f['best_wall']:.0f})"
        xrdcp_cell = f"{x['median_wall']:.2f} s = {x[key]:.0f} {unit} ({best / x['best_wall']:.0f})"
        print(
            f"| {name}: {s['files']} x {s['bytes'] // s['files']} B | {ferry_cell} | {xrdcp_cell} "
            f"| {s['ratio_median']:.2f}x ({s['ratio_best']:.2f}x) "
            f"| {f['peak_rss_MB']:.0f} MB | {x['peak_rss_MB']:.0f} MB |"
        )
    for name, s in results["cases"].items():
        print(
            f"{name}: CPU s ferry {s['ferry']['median_cpu_s']} / xrdcp {s['xrdcp']['median_cpu_s']}; "
            f"load {s['load_1min_before_after']}; xrdcp runs failed and redone: {s['xrdcp_failed_runs']}; "
            f"walls ferry {s['ferry']['walls']} xrdcp {s['xrdcp']['walls']}"
        )
    print(
        f"server checksums: {args.server_checksums}; ferry md5: {'no (--no-md5)' if args.no_md5 else 'yes'}; "
        f"downloads under {dest_root}"
    )
    if "cernopendata_client" in results:
        print("\ncernopendata-client:", json.dumps(results["cernopendata_client"], indent=1))


def main() -> int:
    args = _parse_args()
    names = [n for n in args.cases.split(",") if n]
    work = Path(args.workdir) if args.workdir else workdir("download")
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    dest_root = Path(args.dest_root) if args.dest_root else work
    dest_root.mkdir(parents=True, exist_ok=True)
    root = work / "data"
    generated = _generated(work, root, names)
    results: dict[str, Any] = {
        "machine": machine(),
        "server_checksums": args.server_checksums,
        "dest_root": str(dest_root),
        "cases": {},
    }
    with XRootDServer(root) as server:
        recs = records(server.url, {n: generated[n] for n in names})
        records_file = work / "records.json"
        records_file.write_text(json.dumps(recs))
        _set_server_checksums(args.server_checksums, root, server, names)
        for name in names:
            results["cases"][name] = _run_case(name, args, records_file, server, dest_root)
        if args.cernopendata_client:
            results["cernopendata_client"] = _run_cernopendata_client(work, root, recs, names)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    _print_report(results, args, work, dest_root)
    if args.dest_root and not args.keep:
        for tool in ("ferry", "xrdcp"):
            shutil.rmtree(dest_root / f"out-{tool}", ignore_errors=True)
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
