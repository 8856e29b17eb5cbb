"""`ferry bulk --cluster ...`: the same bulk run with every record a task on a Dask cluster."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from download.sources.cache import OrderDecision
from ferry.core.config import Config, Limits
from ferry.core.errors import ConfigError
from ferry.core.model import Record
from ferry.progress import BulkProgress
from pipeline.bulk import BulkReport
from pipeline.context import RecordResult
from pipeline.runtime import Run, RunSpec


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        metavar="WHERE",
        help="run the records as Dask tasks: local:N (N worker processes here), tcp://HOST:PORT "
        "(an existing scheduler) or htcondor|slurm with --cluster-config (needs dataferry[cluster])",
    )
    parser.add_argument("--cluster-config", metavar="FILE", help="dask-jobqueue settings (YAML, see docs/cluster.md)")


async def run_cluster(
    args: argparse.Namespace,
    config: Config,
    limits: Limits,
    run: Run,
    order: list[OrderDecision],
    record: Callable[[str], Record],
    progress: BulkProgress,
) -> BulkReport:
    """Hand the planned order to the cluster; the client keeps the ledger and the display."""
    ctx = run.ctx
    opts = dataclasses.replace(run.options, run_id=ctx.stats.run_id)
    spec = RunSpec(config=config, options=opts, limits=limits)

    def on_result(result: RecordResult) -> None:
        progress.record_done(ok=result.status != "failed")

    # Imported here, not at the top: Dask is an optional extra, and `ferry bulk` without
    # --cluster must work where it is not installed (the worker module imports distributed).
    try:
        from pipeline.runners.dask import connect, run_on_cluster
    except ImportError as exc:
        raise ConfigError("--cluster needs Dask distributed: pip install 'dataferry[cluster]'") from exc
    async with connect(args.cluster, threads=limits.records_in_flight, config_file=args.cluster_config) as client:
        return await run_on_cluster(
            client, spec, order, record, stats=ctx.stats, ledger=ctx.ledger, on_result=on_result
        )
