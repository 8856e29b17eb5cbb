"""Helpers for the bulk reliability tests: a synthetic source, configs, and truth checks.

``synthetic_source()`` starts a real XRootD server and the portal stand-in over ~36
generated records (seeded, mixed sizes, some with more files than the zip threshold, a
mix of collision / simulated / unclassified). The checks compare what the sandbox
repository holds (its own ``/_sandbox/state``) with the bytes the source serves, so a
test asserts the outcome, not what the client believes it did.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ledger import Ledger
from sandbox.datagen import Scale
from sandbox.stack import Sandbox, run_in_thread, served_tempdir
from stats.events import read_jsonl
from tests.fixtures_repository import RepositoryHandle
from upload.zip.format import EMBEDDED_NAME, is_zip_output

ROOT = Path(__file__).resolve().parents[1]
EXACT = Scale(factor=1.0, minimum=0, maximum=1 << 40)  # generated sizes are the declared ones
FIRST_RECID = 970001
BASE = "/eos/opendata/synthetic"
# type.secondary values and the priority class the runner must derive from them.
KINDS: tuple[tuple[list[str] | None, str], ...] = (
    (["Collision"], "collision"),
    (["Simulated"], "simulated"),
    (["Derived"], "unclassified"),
    (None, "unclassified"),
)
PRIORITY = ("collision", "simulated", "unclassified", "no-metadata")


def synthetic_records(count: int = 36, *, seed: int = 7) -> list[dict[str, Any]]:
    """Portal records (fixture format) with files under /eos/opendata/synthetic/<recid>/.

    Shapes, by position: every 9th has 22-24 tiny files (over the zip threshold of 20),
    every 9th (offset 4) has 6 files of ~10 kB (small median: zipped too), every 12th
    (offset 7) carries one ~1.5-2.5 MB file (bigger than the byte budgets the limits test
    uses), the rest 1-4 files of 1-300 kB. Sizes are exact (see ``EXACT``).
    """
    rng = random.Random(seed)
    out = []
    for i in range(count):
        recid = str(FIRST_RECID + i)
        if i % 9 == 0:
            sizes = [rng.randint(500, 3000) for _ in range(22 + i % 3)]
        elif i % 9 == 4:
            sizes = [rng.randint(8_000, 12_000) for _ in range(6)]
        elif i % 12 == 7:
            sizes = [rng.randint(1_500_000, 2_500_000), rng.randint(1_000, 50_000)]
        else:
            sizes = [rng.randint(1_000, 300_000) for _ in range(rng.randint(1, 4))]
        files = [
            {"uri": f"root://eospublic.cern.ch/{BASE}/{recid}/f{j:02d}_{recid}.dat", "size": s, "checksum": ""}
            for j, s in enumerate(sizes)
        ]
        secondary, _ = KINDS[i % len(KINDS)]
        out.append(make_record(recid, files, secondary))
    return out


def category(record: Mapping[str, Any]) -> str:
    secondary = (record.get("type") or {}).get("secondary")
    return {str(s): c for s_list, c in KINDS if s_list for s in s_list}.get(
        str(secondary[0]) if secondary else "", "unclassified"
    )


def make_record(recid: str, files: list[dict[str, Any]] | None, secondary: list[str] | None) -> dict[str, Any]:
    """One portal record (fixture format); ``files=None`` leaves the key out (a parent record)."""
    kind: dict[str, Any] = {"primary": "Dataset"}
    if secondary is not None:
        kind["secondary"] = secondary
    files_ = files or []
    record: dict[str, Any] = {
        "recid": recid,
        "title": f"Synthetic bulk record {recid}",
        "experiment": ["SANDBOX"],
        "publisher": "CERN Open Data Portal",
        "date_published": "2025",
        "date_created": ["1993"],
        "collections": ["SANDBOX-Bulk"],
        "type": kind,
        "abstract": {"description": f"Generated record {recid} for the bulk runner tests."},
        "license": {"attribution": "CC0-1.0"},
        "distribution": {"formats": ["dat"], "number_files": len(files_), "size": sum(f["size"] for f in files_)},
    }
    if files is not None:
        record["files"] = files
    return record


@dataclass(frozen=True)
class SyntheticSource:
    portal_url: str
    xrootd_url: str
    data_root: Path
    records: list[dict[str, Any]]  # as served: local URIs, real sizes and adler32s

    @property
    def recids(self) -> list[str]:
        return [str(r["recid"]) for r in self.records]

    def record(self, recid: str) -> dict[str, Any]:
        return next(r for r in self.records if str(r["recid"]) == recid)

    def source_md5(self, recid: str) -> dict[str, str]:
        """Key (basename) -> md5 of the bytes the source serves for that file."""
        out = {}
        for f in self.record(recid).get("files", []):
            path = self.data_root / f["uri"].split("//", 2)[2].lstrip("/")
            out[path.name] = md5_file(path)
        return out

    def size(self, recid: str) -> int:
        return sum(int(f["size"]) for f in self.record(recid).get("files", []))


@contextlib.contextmanager
def synthetic_source(records: list[dict[str, Any]] | None = None) -> Iterator[SyntheticSource]:
    """XRootD + portal over ``records`` (default ``synthetic_records()``), stopped on exit."""
    with (
        served_tempdir("ferry-test-bulk-") as workdir,
        run_in_thread(Sandbox(workdir, records=records or synthetic_records(), scale=EXACT)) as sb,
    ):
        yield SyntheticSource(sb.portal_url, sb.xrootd_url, sb.data_root, list(sb.records))


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- configuration and running ------------------------------------------------------------


def write_config(
    tmp_path: Path,
    source: SyntheticSource,
    repo: RepositoryHandle,
    *,
    limits: Mapping[str, Any] | None = None,
    **target: Any,
) -> Path:
    """ferry.toml with target ``sandbox`` (NRP particles) and fast-failing [limits]."""
    token_file = tmp_path / "token"
    token_file.write_text(repo.token)
    options: dict[str, Any] = {
        "type": "invenio",
        "url": repo.url,
        "token_file": str(token_file),
        "profile": "nrp-particles",
        "model": "particles",
        "requests_per_minute": 100_000,
        "requests_per_hour": 1_000_000,
    }
    options.update(target)
    lim: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 1.0, "retries": 3}
    lim.update(limits or {})
    lines = ["[source.cernopendata]", f'portal = "{source.portal_url}"', "", "[targets.sandbox]"]
    lines += [f"{k} = {_toml(v)}" for k, v in options.items()]
    lines += ["", "[limits]"] + [f"{k} = {_toml(v)}" for k, v in lim.items()]
    path = tmp_path / "ferry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def write_recids(path: Path, recids: Iterable[str], extra: str = "") -> Path:
    path.write_text("# bulk reliability test\n" + "\n".join(recids) + "\n" + extra)
    return path


def bulk_args(config: Path, recids: Path, dest: Path, *more: str) -> list[str]:
    return ["--config", str(config), "bulk", "--recids", str(recids), "--target", "sandbox", "--dest", str(dest), *more]


def spawn_ferry(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m ferry.cli ARGS`` as a child process (its output goes to ``log``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ferry.cli", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def run_ferry_process(args: list[str], log: Path, *, timeout: float = 120.0) -> int:
    proc = spawn_ferry(args, log)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(predicate: Any, *, timeout: float = 30.0, step: float = 0.01) -> bool:
    """Poll ``predicate()`` until true; False after ``timeout`` (never a test's timing claim)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def stats_rows(stats_dir: Path) -> list[dict[str, Any]]:
    """Every stats row of every run in ``stats_dir``, runs in the order they started.

    Not by file name: a run id has one-second resolution plus a random suffix, so two runs
    started in the same second would sort at random (and "rows after run N" with them)."""
    runs = [list(read_jsonl(f)) for f in stats_dir.glob("*.jsonl")]
    runs.sort(key=lambda rows: rows[0]["start"] if rows else "")
    return [r for rows in runs for r in rows]


# --- truth checks -----------------------------------------------------------------------


def target_problems(repo: RepositoryHandle, source: SyntheticSource, dest: Path, recids: Iterable[str]) -> list[str]:
    """Everything wrong on the target for ``recids``; [] when every record is there once, intact.

    Once: exactly one entity (draft or record) per recid. Intact: an unzipped record holds
    exactly the source's files with the source's md5; a zipped one holds bundles whose md5
    is that of the staged bundle, and the bundles' members are the source's files, byte
    for byte (md5 of every member).
    """
    state = repo.state()
    problems: list[str] = []
    by_id = {e["id"]: e for e in state["entities"]}
    for recid in recids:
        slot = state["by_recid"].get(recid)
        if slot is None or len(slot["ids"]) != 1:
            problems.append(f"{recid}: {0 if slot is None else len(slot['ids'])} entities on the target")
            continue
        entity = by_id[slot["ids"][0]]
        files = entity["record_files"] if entity["published"] and not entity["has_draft"] else entity["draft_files"]
        want = source.source_md5(recid)
        remote = {k: (f["status"], str(f.get("checksum") or "").removeprefix("md5:")) for k, f in files.items()}
        if any(status != "completed" for status, _ in remote.values()):
            problems.append(f"{recid}: files not completed: {remote}")
            continue
        if all(is_zip_output(recid, k) for k in remote):
            problems += _bundle_problems(recid, dest, remote, want)
        elif {k: m for k, (_, m) in remote.items()} != want:
            problems.append(f"{recid}: target files {sorted(remote)} differ from the source {sorted(want)}")
    return problems


def _bundle_problems(recid: str, dest: Path, remote: dict[str, tuple[str, str]], want: dict[str, str]) -> list[str]:
    problems = []
    members: dict[str, str] = {}
    for key, (_, md5) in remote.items():
        local = dest / recid / key
        if not local.is_file() or md5_file(local) != md5:
            problems.append(f"{recid}: {key} on the target differs from the staged bundle")
            continue
        if key.endswith(".zip"):
            with zipfile.ZipFile(local) as zf:
                for info in zf.infolist():
                    if info.is_dir() or info.filename == EMBEDDED_NAME:
                        continue
                    h = hashlib.md5()
                    with zf.open(info) as member:
                        for block in iter(lambda m=member: m.read(1 << 20), b""):  # type: ignore[misc]
                            h.update(block)
                    members[info.filename] = h.hexdigest()
    if not problems and members != want:
        problems.append(f"{recid}: bundle members {sorted(members)} differ from the source {sorted(want)}")
    return problems


def ledger_problems(dest: Path, recids: Iterable[str]) -> list[str]:
    """The ledger agrees with a finished run: every record ok, no open create, files verified."""
    problems = []
    with Ledger.open(dest / ".ferry" / "ledger-sandbox.sqlite", readonly=True) as ledger:
        for recid in recids:
            row = ledger.get(recid)
            if row is None or not row.ok or row.create_pending or not row.remote_id:
                problems.append(f"{recid}: ledger row {row}")
                continue
            bad = [f.key for f in ledger.file_status(recid) if f.status != "verified"]
            if bad:
                problems.append(f"{recid}: files not verified in the ledger: {bad}")
        if ledger.pending_creates():
            problems.append(f"open create intents: {[r.recid for r in ledger.pending_creates()]}")
    return problems


# --- the sandbox's request log -----------------------------------------------------------


def is_content_put(row: Mapping[str, Any]) -> bool:
    path = str(row["path"])
    return row["method"] == "PUT" and (path.endswith("/content") or "/parts/" in path)


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open interval of ``window`` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def max_overlap(rows: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """Peak (count, bytes) of requests overlapping on the server, from start ts + duration."""
    points: list[tuple[float, int, int]] = []
    for r in rows:
        start, size = float(r["ts"]), int(r.get("request_bytes") or 0)
        # Ends sort before starts at the same instant: back-to-back is not overlap.
        points += [(start, 1, size), (start + float(r["duration"]), -1, -size)]
    points.sort(key=lambda p: (p[0], p[1]))
    count = peak_count = nbytes = peak_bytes = 0
    for _, dc, db in points:
        count, nbytes = count + dc, nbytes + db
        peak_count, peak_bytes = max(peak_count, count), max(peak_bytes, nbytes)
    return peak_count, peak_bytes
