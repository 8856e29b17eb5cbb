"""A record larger than its target allows: a plan decided before any write.

The target's limits (``TargetLimits``: files per record, bytes per file, bytes per record)
and the target's ``oversize`` setting (``ferry.core.config.OVERSIZE_MODES``) decide:

* ``fits``: within every limit; the zip policy still zips for its own reasons.
* ``bundle``: too many files, but bundled into fewer, larger zip files (each within the
  per-file limit) they fit: the zip policy does it (``upload.zip.policy.split`` is the one
  packing rule, so the count said here is the count made).
* ``split``: a series of records, part 1 of N .. N of N, each within the limits; the parts
  and their keys are a pure function of the file list (keys sorted, packed in order), so a
  re-run plans the same parts. pipeline/job_split.py carries them out (each part a record
  of its own, linked to the others and to the source record).
* ``refuse``: a clear refusal naming the limit and the numbers (a ``QuotaError``, stage
  ``plan``: never a transform error), before anything is downloaded or written.

A file bigger than the per-file limit is refused whatever the mode: neither bundling nor
splitting makes one file smaller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ferry.core.errors import QuotaError
from ferry.progress import human_bytes
from upload.targets.base import TargetLimits
from upload.zip.policy import BUNDLE_FIXED_OVERHEAD, entry_budget, split

if TYPE_CHECKING:
    # The job's state is all this needs: its base class, below the record job that calls here.
    from pipeline.job_base import JobBase as RecordJob

Action = Literal["fits", "bundle", "split", "refuse"]


@dataclass(frozen=True)
class OversizePlan:
    action: Action
    reason: str
    parts: tuple[tuple[str, ...], ...] = ()  # split: the file keys of each part, in order
    part_keys: tuple[str, ...] = ()  # split: "<record key>.part-<i>-of-<n>", stable across runs

    def line(self, recid: str) -> str:
        """The dry-run line (and the log line) saying what happens to the record."""
        if self.action == "split":
            sizes = ", ".join(f"{len(keys)} files" for keys in self.parts)
            return f"  oversize: split into {len(self.parts)} linked records ({sizes}): {self.reason}"
        return f"  oversize: {self.action} ({self.reason})"


def _over(files: Sequence[tuple[str, int]], limits: TargetLimits) -> list[str]:
    count, total = len(files), sum(size for _, size in files)
    over = []
    if count > limits.max_files:
        over.append(f"{count} files > the target's limit of {limits.max_files} files per record")
    if total > limits.max_record_size:
        over.append(
            f"{total} bytes ({human_bytes(total)}) > the target's limit of {limits.max_record_size} bytes "
            f"({human_bytes(limits.max_record_size)}) per record"
        )
    return over


def _bundled(files: Sequence[tuple[str, int]], limits: TargetLimits) -> tuple[int, int] | None:
    """(bundles, bytes) when zip bundles within the per-file limit fit the record limits."""
    bundles = len(split(files, limits.max_file_size))
    size = sum(entry_budget(key, n) for key, n in files) + bundles * BUNDLE_FIXED_OVERHEAD
    if bundles + 1 > limits.max_files or size > limits.max_record_size:  # + the bundle manifest
        return None
    return bundles, size


def split_parts(files: Sequence[tuple[str, int]], limits: TargetLimits) -> list[list[str]]:
    """Keys sorted, packed in that order; a new part when the next file would break a limit.

    A part leaves one file slot free when it holds more than one file: the zip policy may
    bundle a part, and a bundle comes with its manifest."""
    parts: list[list[str]] = []
    count = used = 0
    cap = max(1, limits.max_files - 1) if limits.max_files > 1 else 1
    for key, size in sorted(files):
        if not parts or count + 1 > cap or used + size > limits.max_record_size:
            parts.append([])
            count = used = 0
        parts[-1].append(key)
        count += 1
        used += size
    return parts


def part_key(record_key: str, index: int, total: int) -> str:
    """The stable key of part ``index`` (1-based) of ``total``: the same on every re-run."""
    return f"{record_key}.part-{index}-of-{total}"


def plan_oversize(files: Sequence[tuple[str, int]], limits: TargetLimits, mode: str, *, key: str) -> OversizePlan:
    """What to do with a record of ``files`` (key, size) on a target with ``limits``."""
    for name, size in files:
        if size > limits.max_file_size:
            return OversizePlan(
                "refuse",
                f"file {name} is {size} bytes ({human_bytes(size)}), more than the target's limit of "
                f"{limits.max_file_size} bytes ({human_bytes(limits.max_file_size)}) per file: neither "
                "bundling nor splitting makes one file smaller",
            )
    over = _over(files, limits)
    if not over:
        return OversizePlan("fits", "within the target's limits")
    why = "; ".join(over)
    if mode == "split":
        parts = split_parts(files, limits)
        keys = tuple(part_key(key, i, len(parts)) for i in range(1, len(parts) + 1))
        return OversizePlan("split", why, tuple(tuple(p) for p in parts), keys)
    bundled = _bundled(files, limits) if mode == "bundle" else None
    if bundled is not None:
        bundles, size = bundled
        return OversizePlan("bundle", f"{why}: {bundles} zip bundle(s) + their manifest, {human_bytes(size)}")
    hint = ""
    if mode == "bundle":
        n_parts = len(split_parts(files, limits))
        hint = f'; bundling cannot carry it (bytes stay bytes); oversize = "split" would make {n_parts} linked records'
    elif mode == "refuse":
        hint = '; the target is set to oversize = "refuse" ("bundle" or "split" would carry it)'
    return OversizePlan("refuse", why + hint)


def check(job: RecordJob, key: str) -> OversizePlan:
    """The plan for ``job``'s record: printed in a dry run, a ``QuotaError`` when refused.

    Called by the record job right after the transform, before any download or write."""
    ctx = job.ctx
    files = [(f.key, f.size or 0) for f in job.record.files]
    plan = plan_oversize(files, ctx.target.limits, ctx.oversize, key=key)
    if plan.action == "bundle" and ctx.zip_policy.force is False:
        plan = OversizePlan("refuse", f"{plan.reason}, but zipping is disabled for this run")
    if plan.action != "fits":
        job.oversize_note = plan.line(job.recid).strip()
    if ctx.dry_run and plan.action != "fits":
        ctx.plan(f"record {job.recid}:{plan.line(job.recid)}")
        if plan.action == "split":
            for part, keys in zip(plan.part_keys, plan.parts, strict=True):
                size = sum(s for k, s in files if k in set(keys))
                ctx.plan(f"  part {part}: {len(keys)} file(s), {human_bytes(size)} ({keys[0]} .. {keys[-1]})")
    if plan.action == "refuse":
        raise QuotaError(f"refused: {plan.reason}", recid=job.recid)
    return plan  # split: the record job hands the parts to pipeline/job_split.py
