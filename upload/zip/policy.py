"""Zip or not, and how to split: pure functions of the file list and the target's limits.

The seed zipped when a record had more than 20 files. Here the threshold is never above
the target's file limit (a record the target would refuse file by file is always zipped),
a record whose median file is small is zipped too (thousands of requests for kilobytes),
and a record zipped by an earlier run stays zipped: after ``--delete-originals`` the bundle
may be the only thing left on disk, and that must never look like a one-file record.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ferry.core.config import Config, TargetConfig
from ferry.core.errors import ConfigError, QuotaError

MiB = 1024 * 1024
DEFAULT_SMALL_MEDIAN = 1 * MiB
# Zipping a handful of files saves nothing: bundle + bundle manifest are two uploads already.
SMALL_MIN_COUNT = 5
# Bytes a bundle may need beyond its members' budgets (``entry_budget``): the end records
# (22 + ZIP64 56 + 20) and the embedded manifest's own entry and fixed JSON, with slack.
BUNDLE_FIXED_OVERHEAD = 4096


@dataclass(frozen=True)
class ZipPolicy:
    """How the pipeline zips: thresholds and the target's limits (``from_config``)."""

    threshold: int = 20
    max_files: int = 100  # the target's files per record
    max_bundle_size: int = 10 * 10**9  # the target's bytes per file
    small_median_bytes: int = DEFAULT_SMALL_MEDIAN
    deflate_ext: frozenset[str] = field(default_factory=frozenset)  # lowercased, with dot: ".txt"
    force: bool | None = None  # True: always zip; False: never; None: decide

    def __post_init__(self) -> None:
        for name in ("threshold", "max_files", "max_bundle_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"zip {name} must be positive, not {getattr(self, name)!r}")
        if self.max_bundle_size <= BUNDLE_FIXED_OVERHEAD * 2:
            raise ConfigError(f"zip max bundle size {self.max_bundle_size} is too small for a bundle")

    @classmethod
    def from_config(cls, config: Config, target: TargetConfig | None = None, **overrides: object) -> ZipPolicy:
        """Policy from ``limits.zip_threshold`` / ``zip_small_median_bytes`` and the target's
        file count and file size limits."""
        t = target or TargetConfig(name="default", type="local")
        values: dict[str, object] = {
            "threshold": config.limits.zip_threshold,
            "small_median_bytes": config.limits.zip_small_median_bytes,
            "max_files": t.max_files_per_record,
            "max_bundle_size": t.max_file_size,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def deflates(self, key: str) -> bool:
        lower = key.lower()
        return any(lower.endswith(ext) for ext in self.deflate_ext)


@dataclass(frozen=True)
class ZipDecision:
    zip: bool
    reason: str  # human-readable; goes to stats
    bundles: int  # how many bundles a fresh split needs (0 when not zipping)
    file_count: int = 0
    total_bytes: int = 0


def parse_ext_list(text: str | None) -> frozenset[str]:
    """``".txt,json, .CSV"`` -> ``{".txt", ".json", ".csv"}``."""
    if not text:
        return frozenset()
    out = set()
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            out.add(part if part.startswith(".") else "." + part)
    return frozenset(out)


def entry_budget(key: str, size: int, *, deflated: bool = False) -> int:
    """Upper bound of the bytes one member takes in a bundle.

    Local header (30) + central header (46) + name twice + ZIP64 extras (20 + 28) + a row
    of the embedded manifest (~260 + name). Deflate can grow incompressible data a little
    (5 bytes per 16 KiB block, plus a few bytes), so deflated members get that margin.
    """
    name = len(key.encode("utf-8"))
    margin = size // 3000 + 64 if deflated else 0
    return size + margin + 400 + 3 * name


def split(files: Sequence[tuple[str, int]], max_bundle_size: int, *, deflated: Iterable[str] = ()) -> list[list[str]]:
    """Deterministic split: keys sorted, packed in that order, a new bundle when one is full.

    Raises ``QuotaError`` naming a file that cannot fit in any bundle.
    """
    deflate_set = set(deflated)
    budget = max_bundle_size - BUNDLE_FIXED_OVERHEAD
    bundles: list[list[str]] = []
    used = budget + 1  # forces the first bundle open
    for key, size in sorted(files):
        need = entry_budget(key, size, deflated=key in deflate_set)
        if need > budget:
            raise QuotaError(
                f"file {key} ({size} bytes) cannot fit in a bundle of at most {max_bundle_size} bytes "
                "(the target's file size limit)",
                file=key,
            )
        if used + need > budget:
            bundles.append([])
            used = 0
        bundles[-1].append(key)
        used += need
    return bundles


def decide_zip(
    files: Sequence[tuple[str, int]],
    *,
    threshold: int = 20,
    max_files: int = 100,
    small_median_bytes: int = DEFAULT_SMALL_MEDIAN,
    force: bool | None = None,
    max_bundle_size: int | None = None,
    zipped_before: bool = False,
    originals_missing: int = 0,
) -> ZipDecision:
    """Zip this record's data files or not, and why (pure; no I/O).

    ``files`` are (key, size) of every data file of the record, present on disk or only
    in a bundle: the count is the record's, never what happens to be on disk.
    ``zipped_before``: an earlier run left bundles; they stay unless ``force`` is False and
    every original is still there (``originals_missing == 0``).
    """
    count = len(files)
    total = sum(size for _, size in files)
    if count == 0:
        return ZipDecision(False, "no data files", 0, count, total)
    choice = _settled_choice(count, force, zipped_before, originals_missing, max_files)
    if choice is None:
        choice = _choice_by_shape(files, threshold, max_files, small_median_bytes)
    zip_it, reason = choice
    if not zip_it:
        return ZipDecision(False, reason, 0, count, total)
    # Only a record being zipped has to fit into bundles (raises QuotaError naming a file that cannot).
    bundles = len(split(files, max_bundle_size)) if max_bundle_size else 1
    if bundles + 1 > max_files:
        raise QuotaError(
            f"{count} files ({total} bytes) need {bundles} bundles plus their manifest, "
            f"more than the target's limit of {max_files} files per record"
        )
    return ZipDecision(True, reason, bundles, count, total)


def _settled_choice(
    count: int, force: bool | None, zipped_before: bool, originals_missing: int, max_files: int
) -> tuple[bool, str] | None:
    """(zip or not, why) when the caller or an earlier run already settled it; ``None``
    when the record's shape decides."""
    if force is True:
        return True, f"zipping forced ({count} files)"
    if zipped_before and (force is None or originals_missing):
        kept = f"{originals_missing} of {count} originals gone" if originals_missing else "originals present"
        return True, f"already zipped by an earlier run ({count} files in bundles, {kept})"
    if force is False:
        if count > max_files:
            raise QuotaError(f"zipping is disabled but {count} files exceed the target's limit of {max_files} files")
        return False, f"zipping disabled ({count} files)"
    return None


def _choice_by_shape(
    files: Sequence[tuple[str, int]], threshold: int, max_files: int, small_median_bytes: int
) -> tuple[bool, str]:
    """(zip or not, why) from the number of files and their median size."""
    count = len(files)
    limit = min(threshold, max_files)
    if count > limit:
        why = f"{count} files > threshold {limit}"
        if threshold > max_files:
            why += f" (configured {threshold}, lowered to the target's limit of {max_files} files)"
        return True, why
    median = statistics.median(sorted(size for _, size in files))
    if count >= SMALL_MIN_COUNT and median < small_median_bytes:
        return True, f"median file size {int(median)} bytes < {small_median_bytes} bytes ({count} files)"
    return False, f"{count} files <= threshold {limit}, median file size {int(median)} bytes"
