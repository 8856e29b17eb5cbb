"""The zip pool's workers exit with the command that made them, even after kill -9.

Before, a killed ``ferry bulk`` left its idle zip workers (and so the forkserver) running
for ever: three processes per kill (seen after the bulk kill loop of
tests/test_bulk_reliability.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from upload.zip.zipper import zip_executor
pool = zip_executor(2)
pids = {pool.submit(os.getpid).result() for _ in range(8)}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (exited, not yet reaped by its parent).
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    return state != "Z"


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd (Linux >= 5.3)")
def test_workers_exit_when_the_command_is_killed() -> None:
    root = Path(__file__).resolve().parents[1]
    with subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            workers = [int(p) for p in proc.stdout.readline().split()]
            assert workers and all(_alive(p) for p in workers) and proc.pid not in workers
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in workers if _alive(p)] == [], "zip workers outlived the killed command"
