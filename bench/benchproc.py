"""The processes of a measured command, from /proc: its tree's RSS, and its orphans.

Split from benchlib.py (``measure`` uses both): walking a process tree and adopting the
processes that outlive their parent are one subject, about 140 lines of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def tree_rss_kib(pid: int, seen: dict[int, str] | None = None) -> int:
    """RSS (KiB) of ``pid`` and all its descendants, from /proc.

    Walks ``/proc/PID/task/TID/children`` and reads ``statm``: a handful of small reads per
    poll. (Scanning every /proc/*/status instead cost ~0.25 of a core at 20 ms, taken from
    the measured command on this 2-core machine.) ``seen`` collects each process found,
    with its start time (so that a reused pid is not taken for it)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue
        if seen is not None and p not in seen:
            started = _start_time(p)
            if started is not None:
                seen[p] = started
        todo.extend(children(p))
    return total


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# --- adopting the command's orphans ---------------------------------------------------------
#
# /usr/bin/time counts the CPU of the processes that were waited for up the tree. A process
# whose parent exits first is reparented and its CPU is lost to it: ``ferry ... --cluster
# local:N`` forks its Dask workers from a multiprocessing fork server, a child of the
# client that outlives it (it exits when it reads EOF after the client is gone). The fork
# server reaps the workers, so their CPU is in its children's rusage; nobody reaps the fork
# server itself. While a command runs, this process is a child subreaper
# (prctl(PR_SET_CHILD_SUBREAPER)): such orphans are reparented to it instead of to init,
# and ``measure`` waits for each (wait4 gives its rusage, with what it reaped) after the
# command ends. Waited for: the processes seen in the command's tree, and the children of
# this process that were not there when the command started (an orphan too short-lived for
# the 50 ms poll). So nothing else in this process may start processes while a command is
# measured (the benchmarks start their servers before).

PR_SET_CHILD_SUBREAPER = 36
ADOPT_WAIT = 20.0  # seconds to wait for the command's orphans after it ended
_subreaper_lock = threading.Lock()
_subreaper_users = 0


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0:
            _set_subreaper(True)
        _subreaper_users += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0:
                _set_subreaper(False)


@dataclass
class Adopted:
    cpu: float = 0.0
    maxrss_kib: int = 0
    reaped: int = 0
    left_running: int = 0


def reap_adopted(seen: dict[int, str], before: set[int], skip: int, wait: float) -> Adopted:
    """Wait for the processes of ``seen`` and the children of this process not in ``before``
    that were reparented to this one (or will be, when their own parent exits), and add up
    their rusage; give up on the rest after ``wait`` s."""
    out = Adopted()
    pending = {pid: started for pid, started in seen.items() if pid != skip}
    deadline = time.monotonic() + wait
    while True:
        for pid in children(os.getpid()):  # orphans too short-lived to have been seen
            started = _start_time(pid)
            if pid not in before and pid != skip and pid not in pending and started is not None:
                pending[pid] = started
        if not pending:
            break
        for pid, started in list(pending.items()):
            if _reaped(pid, started, out):
                del pending[pid]
                before.add(pid)  # not to be taken again by the rescan, should the pid be reused
        if time.monotonic() >= deadline:
            out.left_running = len(pending)
            break
        time.sleep(0.02)
    return out


def _reaped(pid: int, started: str, out: Adopted) -> bool:
    """True when ``pid`` is done with: reaped here (its rusage added to ``out``), or gone."""
    try:
        done, _status, usage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        # Not (yet) ours: gone (its parent reaped it, so its CPU is counted there), or
        # alive under a parent that has not exited yet.
        return _start_time(pid) != started
    if not done:
        return False
    out.cpu += usage.ru_utime + usage.ru_stime
    out.maxrss_kib = max(out.maxrss_kib, usage.ru_maxrss)
    out.reaped += 1
    return True
