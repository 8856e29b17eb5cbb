"""The fork server local Dask workers are forked from (``--cluster local:N``), started early.

Without Dask: nothing here imports it, so a command can start the server at once and the
server imports Dask and the pipeline while the command still opens its run and plans.
Spawned, every worker imported them itself (~0.5 s of CPU each; 2.2 s before 4 workers
could run a task on 2 cores); forked from the warm server they are up in a fraction of
that. The server is a fresh process (not a fork of this threaded one), so workers start
clean. ``pipeline.runners.dask`` tells Dask to use it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import re

# Imported once by the fork server, before any worker is forked from it.
WORKER_MODULES = ("distributed", "pipeline.runners.dask_worker", "pipeline.runners.dask_mirror", "pipeline.job")
_LOCAL = re.compile(r"^local(?::\d+)?$")


def start_forkserver(cluster: str | None) -> None:
    """For ``--cluster local:N``: the fork server started now, importing in the background."""
    if not cluster or not _LOCAL.match(cluster):
        return
    multiprocessing.set_forkserver_preload(list(WORKER_MODULES))
    multiprocessing.forkserver.ensure_running()
