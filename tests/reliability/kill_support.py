"""The kill -9 loop of tests/reliability/test_kill9_matrix.py, and truth checks per target.

``kill_rounds`` starts a ferry command as a child process, waits until it has begun to
write (a predicate on the files or the target), lets it run a random moment more and
kills it with SIGKILL; N times; then the same command runs to its end. The checks read
what the target holds with its own tools (the sandbox admin endpoints, boto, the file
system), never with ferry's target code, and compare it with the bytes the source serves.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bulk_support import ROOT, wait_for
from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle


@dataclass
class Rounds:
    """What the loop did: kills that hit a running process, and runs that ended first."""

    killed: int = 0
    finished_first: int = 0
    final_rc: int | None = None


def spawn(args: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ferry.cli", *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def kill_rounds(
    args: list[str],
    log: Path,
    *,
    kills: int,
    moments: list[Callable[[], bool]],
    seed: int,
    window: float = 0.1,
    env: Mapping[str, str] | None = None,
) -> Rounds:
    """``kills`` rounds of: start; wait for one of ``moments`` (a predicate picked at random:
    e.g. "a .part exists", "the target holds a file"), then a random ``[0, window)`` more;
    kill -9. Then one run to the end (its exit code in ``final_rc``). Waiting for a moment,
    not a fixed time, keeps the kills inside the work however fast the machine is."""
    rng = random.Random(seed)
    done = Rounds()
    for _ in range(kills):
        moment = rng.choice(moments)
        proc = spawn(args, log, env)
        try:
            wait_for(lambda p=proc, m=moment: m() or p.poll() is not None, timeout=120, step=0.005)
            # Until one kill has landed, kill right at the moment: a small job can finish
            # inside the random extra wait, and a round that finished first proves nothing.
            time.sleep(rng.uniform(0.0, window) if done.killed else 0.0)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                done.killed += 1
            else:
                done.finished_first += 1
            with open(log, "a") as out:  # the rounds, for whoever reads the log of a failure
                out.write(f"\n--- kill round: killed {done.killed}, finished first {done.finished_first}\n")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    proc = spawn(args, log, env)
    try:
        done.final_rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return done


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def exactly(want: Mapping[str, str], got: list[tuple[str, str]], where: str) -> list[str]:
    """``got`` (key, md5) pairs hold each wanted key once, with its md5, and nothing else."""
    keys = [k for k, _ in got]
    problems = [f"{where}: {k} held {keys.count(k)} times" for k in sorted(set(keys)) if keys.count(k) > 1]
    have = dict(got)
    if set(have) != set(want):
        problems.append(f"{where}: keys {sorted(have)} != source {sorted(want)}")
    problems += [f"{where}: {k} md5 {have[k]} != source {v}" for k, v in want.items() if k in have and have[k] != v]
    return problems


def zenodo_problems(zen: ZenodoHandle, want: Mapping[str, str]) -> list[str]:
    items: list[dict[str, Any]] = list(zen.summary()["items"])
    if len(items) != 1:
        return [f"zenodo: {len(items)} depositions, want 1"]
    files: dict[str, dict[str, Any]] = items[0]["files"]
    return exactly(want, [(k, str(v["md5"])) for k, v in files.items()], "zenodo")


def s3_objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    client = server.sync_client()
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def s3_open_uploads(server: S3Server, bucket: str) -> list[str]:
    answer = server.sync_client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in answer.get("Uploads", [])]


def tree_md5(root: Path, *, skip: tuple[str, ...] = (".ferry",)) -> list[tuple[str, str]]:
    """(relative path, md5) of every file under ``root``, ferry's state folders left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = Path(dirpath) / name
            out.append((str(path.relative_to(root)), md5(path.read_bytes())))
    return out
