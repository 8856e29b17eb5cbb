"""Shared plumbing of the upload and bulk benchmarks (bench_upload.py, bench_bulk.py).

Not a test helper: benchmarks are run by hand. Everything big lives in /tmp/ferry-bench-*
and is removed afterwards. Pieces:

- ``workdir``: a world-searchable temp dir (xrootd runs as an unprivileged user);
- ``bench_record``: a record in the portal fixture format (a real DELPHI record's
  metadata, our recid and file sizes), for ``sandbox.stack.Sandbox(records=...)``;
- ``RepoProcess``: the sandbox repository (or the Zenodo stand-in) as its own process (so
  its CPU is not ours), with request counts from its request log;
- ``write_config``: a ferry.toml for the sandbox source + repository;
- ``measure``: runs a command, returns wall time, exit code, CPU and peak RSS (both
  ``/usr/bin/time -v`` and a /proc poll of the whole process tree); processes of the
  command that outlive their parent (a fork server and the Dask workers forked from it)
  are adopted and reaped here, so their CPU counts too;
- ``machine``: the facts a result needs (date, nproc, memory, CPU).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchproc import ADOPT_WAIT, children, reap_adopted, subreaper, tree_rss_kib  # noqa: E402

from sandbox.datagen import Scale  # noqa: E402
from sandbox.stack import select_records  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
FERRY = str(ROOT / ".venv" / "bin" / "ferry")
MiB = 1024 * 1024
GiB = 1024 * MiB
EXACT = Scale(factor=1.0, minimum=0, maximum=1 << 42)  # sizes as written in the records
TEMPLATE_RECID = "81045"  # a DELPHI simulation record: valid in both metadata profiles


def workdir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"ferry-bench-{name}-", dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def sync() -> None:
    """Flush dirty pages so one run's writeback does not slow the next."""
    subprocess.run(["sync"], check=True)


def machine() -> dict[str, Any]:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem / GiB, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def machine_line(facts: dict[str, Any]) -> str:
    return (
        f"{facts['date']}; nproc {facts['nproc']}, {facts['memory_gib']} GiB RAM, {facts['cpu']}; "
        f"Python {facts['python']}, Linux {facts['kernel']}"
    )


# --- records ------------------------------------------------------------------------------


@functools.cache
def _template() -> dict[str, Any]:
    return select_records([TEMPLATE_RECID])[0]  # reads every fixture file: once


def bench_record(recid: str, sizes: Sequence[int], *, title: str | None = None) -> dict[str, Any]:
    """A fixture-format record: DELPHI metadata, files ``/eos/opendata/bench/<recid>/f00000.dat``..."""
    rec = copy.deepcopy(_template())
    rec["recid"] = recid
    rec["title"] = title or f"Benchmark record {recid}"
    rec.pop("doi", None)  # not this record's DOI
    rec["files"] = [
        {"uri": f"root://bench//eos/opendata/bench/{recid}/f{i:05d}.dat", "size": size, "checksum": "adler32:0"}
        for i, size in enumerate(sizes)
    ]
    rec["distribution"] = dict(rec.get("distribution") or {}, number_files=len(sizes), size=sum(sizes))
    return rec


# --- the sandbox repository as a process --------------------------------------------------


@dataclass
class RepoProcess:
    """``python -m sandbox.repository`` (or another sandbox server: ``module``, e.g. the
    Zenodo stand-in ``sandbox.zenodo``) on loopback, its ``knobs`` as flags; it prints its
    URL first. stop() ends it (by its pid only); leaving ``with`` also removes ``data``."""

    data: Path
    knobs: dict[str, Any]
    token: str = ""
    url: str = ""
    proc: subprocess.Popen[str] | None = None
    module: str = "sandbox.repository"

    def start(self) -> Self:
        self.token = self.token or secrets.token_urlsafe(24)
        cmd = [PY, "-m", self.module, "--data", str(self.data), "--port", "0", f"--token={self.token}"]
        for name, value in self.knobs.items():
            cmd.append(f"--{name.replace('_', '-')}={value}")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"{self.module} did not start (first line {self.url!r})")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def requests(self) -> list[dict[str, Any]]:
        """Rows of the server's request log (method, path, status, request_bytes, ...)."""
        log = self.data / "requests.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def request_count(self) -> int:
        log = self.data / "requests.jsonl"
        if not log.exists():
            return 0
        with open(log, "rb") as fh:
            return sum(1 for _ in fh)

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.wipe()


GENEROUS = {"rate_per_minute": 10**9, "rate_per_hour": 10**10, "checksum_delay_ms": 0}


def write_config(
    path: Path,
    *,
    portal: str,
    repo: RepoProcess,
    target: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> Path:
    """A ferry.toml: the sandbox portal as source, the repository as target ``sandbox``."""
    token_file = path.parent / f"{path.stem}.token"
    token_file.write_text(repo.token)
    os.chmod(token_file, 0o600)
    options: dict[str, Any] = {
        "type": "invenio",
        "url": repo.url,
        "token_file": str(token_file),
        "profile": "nrp-particles",
        "model": "particles",
        "requests_per_minute": 10**8,
        "requests_per_hour": 10**9,
    }
    options.update(target or {})
    lines = ["[source.cernopendata]", f"portal = {_toml(portal)}", "", "[targets.sandbox]"]
    lines += [f"{k} = {_toml(v)}" for k, v in options.items()]
    lines += ["", "[limits]"] + [f"{k} = {_toml(v)}" for k, v in (limits or {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))


# --- running and measuring a command ------------------------------------------------------


@dataclass
class Measured:
    cmd: list[str]
    wall: float
    rc: int
    maxrss_kib: int  # /usr/bin/time -v (and adopted processes): the largest single process of the tree
    tree_peak_kib: int  # /proc poll every 50 ms: the sum over the process tree
    # User + system CPU seconds of every process the command started: the command and its
    # waited-for children (/usr/bin/time -v) plus the adopted ones (``cpu_adopted``).
    cpu: float
    stdout: str
    stderr: str
    # Of ``cpu``: the processes that outlived their parent and were reaped by ``measure``
    # (with what they had reaped themselves): a fork server and the workers forked from it.
    cpu_adopted: float = 0.0
    adopted: int = 0  # how many such processes were reaped
    left_running: int = 0  # adopted processes still running ``ADOPT_WAIT`` s after the command ended (not counted)

    @property
    def maxrss_mb(self) -> float:
        return self.maxrss_kib * 1024 / 1e6

    @property
    def tree_peak_mb(self) -> float:
        return self.tree_peak_kib * 1024 / 1e6


def measure(cmd: Sequence[str], *, env: dict[str, str] | None = None, poll: float = 0.05) -> Measured:
    """Run ``cmd`` under ``/usr/bin/time -v``; wall time, exit code, CPU, peak RSS two ways.

    The wall time ends when the command exits; its orphans are then waited for (up to
    ``ADOPT_WAIT`` s) and their CPU added (see benchproc.py, "adopting the command's orphans")."""
    full = ["/usr/bin/time", "-v", *cmd]
    out_f = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below
    err_f = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below
    seen: dict[int, str] = {}
    with subreaper():
        before = set(children(os.getpid()))
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, cwd=ROOT, stdout=out_f, stderr=err_f, text=True, env=env)
        peak = 0
        stop = threading.Event()

        def poller() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss_kib(proc.pid, seen))
                stop.wait(poll)

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        stop.set()
        thread.join()
        adopted = reap_adopted(seen, before, proc.pid, ADOPT_WAIT)
    out_f.seek(0)
    err_f.seek(0)
    stdout, stderr = out_f.read(), err_f.read()
    out_f.close()
    err_f.close()
    maxrss, cpu = 0, 0.0
    for line in stderr.splitlines():
        if "Maximum resident set size" in line:
            maxrss = int(line.rsplit(":", 1)[1])
        elif "User time (seconds)" in line or "System time (seconds)" in line:
            cpu += float(line.rsplit(":", 1)[1])
    # /usr/bin/time's own RSS (~2 MB) is in the tree sum; it is small and kept (conservative).
    return Measured(
        list(cmd),
        wall,
        rc,
        max(maxrss, adopted.maxrss_kib),
        peak,
        cpu + adopted.cpu,
        stdout,
        stderr,
        cpu_adopted=adopted.cpu,
        adopted=adopted.reaped,
        left_running=adopted.left_running,
    )


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, with reaped children) of a live process, from /proc."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat: everything but idle
    and iowait). The difference over a run minus the CPU of the processes we measured is the
    CPU used by something else (other helpers' jobs): evidence that a run was undisturbed."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def loadavg3() -> str:
    """The 1/5/15-minute load averages as ``uptime`` prints them (the machine is shared)."""
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
