"""A tree's checksums (state first, hashing only what changed), its manifest, its check.

    digest_tree(root, opts)          -> every file with its sha256 (and md5 when asked)
    build_manifest(root, opts)       -> the Manifest of the tree (+ the digest, for counts)
    verify_tree(root, manifest)      -> missing, extra and mismatching files

All blocking (file-system work in threads): call from a thread in async code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from archive.hashing import WORKERS, HashJob, Hooks, PartsWanted, hash_many
from archive.manifest import Manifest, ManifestRow, djarchive_unreadable, shown
from ferry.core.tree import ScanOptions, TreeFile, scan_tree
from ferry.core.tree_state import TreeState, now_ns

log = logging.getLogger(__name__)

DEFAULT_SCAN = ScanOptions()


@dataclass
class TreeDigest:
    files: list[TreeFile]
    checksums: dict[str, dict[str, str]]  # path -> algorithm -> hex
    hashed_files: int = 0
    hashed_bytes: int = 0

    @property
    def reused_files(self) -> int:
        return len(self.files) - self.hashed_files


def digest_files(
    files: Sequence[TreeFile],
    state: TreeState,
    *,
    algorithms: tuple[str, ...] = ("sha256",),
    rehash: bool = False,
    hooks: Hooks | None = None,
    workers: int = WORKERS,
    on_digest: Callable[[str, int, dict[str, str]], None] | None = None,
    parts: PartsWanted | None = None,
) -> TreeDigest:
    """Checksums of ``files``: from ``state`` when unchanged, else hashed (and stored).
    ``on_digest(path, size, digests)``: called for each file as soon as its checksums are known
    (from the state first, then as hashing ends each file), in this thread. ``parts``: part
    md5s of the files hashed now (not kept in the state: they depend on the target)."""
    known: dict[str, dict[str, str]] = {}
    todo: list[HashJob] = []
    for f in files:
        hit = None if rehash else state.lookup(f.path, f.stat, algorithms)
        if hit is not None:
            known[f.path] = hit
        else:
            todo.append(HashJob(f.path, f.full, f.stat))
    if on_digest is not None:
        sizes = {f.path: f.stat.size for f in files}
        for path, digests in known.items():
            on_digest(path, sizes[path], digests)
    started = now_ns()
    fresh = hash_many(todo, algorithms, workers=workers, hooks=hooks, on_done=on_digest, parts=parts)
    by_path = {f.path: f for f in files}
    for path, digests in fresh.items():
        state.put(path, by_path[path].stat, digests, hashed_at_ns=started)
        known[path] = digests
    state.save()
    return TreeDigest(list(files), known, len(todo), sum(j.stat.size for j in todo))


def digest_tree(
    root: Path,
    opts: ScanOptions = DEFAULT_SCAN,
    *,
    algorithms: tuple[str, ...] = ("sha256",),
    rehash: bool = False,
    hooks: Hooks | None = None,
    state: TreeState | None = None,
    on_digest: Callable[[str, int, dict[str, str]], None] | None = None,
    parts: PartsWanted | None = None,
) -> TreeDigest:
    files = scan_tree(root, opts)
    own = state is None
    st = state if state is not None else TreeState.for_tree(root)
    try:
        digest = digest_files(
            files, st, algorithms=algorithms, rehash=rehash, hooks=hooks, on_digest=on_digest, parts=parts
        )
        if own and not opts.excludes and opts.include_dotfiles:
            st.prune({f.path for f in files})  # only a full scan knows what is gone
        return digest
    finally:
        if own:
            st.close()


def manifest_of(digest: TreeDigest) -> Manifest:
    rows = []
    for f in digest.files:
        reason = djarchive_unreadable(f.path)
        if reason:
            log.warning("%r is written correctly, but djarchive's own reader cannot read it back: %s", f.path, reason)
        rows.append(ManifestRow(f.path, f.stat.size, digest.checksums[f.path]["sha256"]))
    return Manifest(rows)


def build_manifest(
    root: Path,
    opts: ScanOptions = DEFAULT_SCAN,
    *,
    rehash: bool = False,
    hooks: Hooks | None = None,
    md5: bool = False,
) -> tuple[Manifest, TreeDigest]:
    algorithms = ("sha256", "md5") if md5 else ("sha256",)
    digest = digest_tree(root, opts, algorithms=algorithms, rehash=rehash, hooks=hooks)
    return manifest_of(digest), digest


@dataclass(frozen=True)
class Mismatch:
    path: str
    field: str  # "size" or "sha256"
    expected: str
    actual: str


@dataclass
class VerifyReport:
    root: Path
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    hashed_files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.mismatched)

    def lines(self) -> list[str]:
        out = [f"missing: {shown(p)}" for p in self.missing]
        out += [f"extra (not in the manifest): {shown(p)}" for p in self.extra]
        out += [
            f"mismatch: {shown(m.path)}: {m.field} is {m.actual}, the manifest says {m.expected}"
            for m in self.mismatched
        ]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.root),
            "ok": self.ok,
            "checked": self.checked,
            "missing": self.missing,
            "extra": self.extra,
            "mismatched": [m.__dict__ for m in self.mismatched],
        }


def is_dotted(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def without_dotfiles(digest: TreeDigest) -> TreeDigest:
    files = [f for f in digest.files if not is_dotted(f.path)]
    return TreeDigest(
        files, {f.path: digest.checksums[f.path] for f in files}, digest.hashed_files, digest.hashed_bytes
    )


def compare_digest(root: Path, manifest: Manifest, digest: TreeDigest, *, include_dotfiles: bool) -> VerifyReport:
    """``verify_tree`` over checksums already computed (a scan that included dotfiles)."""
    report = VerifyReport(root, checked=len(manifest), hashed_files=digest.hashed_files)
    present = {f.path: f for f in digest.files}
    report.missing = [r.path for r in manifest if r.path not in present]
    report.extra = [
        f.path for f in digest.files if f.path not in manifest and (include_dotfiles or not is_dotted(f.path))
    ]
    for row in manifest:
        f = present.get(row.path)
        if f is None:
            continue
        if f.stat.size != row.size:
            report.mismatched.append(Mismatch(row.path, "size", str(row.size), str(f.stat.size)))
        elif digest.checksums[row.path]["sha256"] != row.sha256:
            report.mismatched.append(Mismatch(row.path, "sha256", row.sha256, digest.checksums[row.path]["sha256"]))
    return report


def verify_tree(
    root: Path,
    manifest: Manifest,
    opts: ScanOptions = DEFAULT_SCAN,
    *,
    rehash: bool = False,
    hooks: Hooks | None = None,
    state: TreeState | None = None,
) -> VerifyReport:
    """Compare ``root`` with ``manifest``. A dotfile the manifest lists is expected; an
    unlisted one counts as extra only with ``include_dotfiles`` (as ``ferry manifest``)."""
    files = scan_tree(root, replace(opts, include_dotfiles=True))
    report = VerifyReport(root)
    present = {f.path: f for f in files}
    report.missing = [r.path for r in manifest if r.path not in present]
    report.extra = [
        f.path for f in files if f.path not in manifest and (opts.include_dotfiles or not is_dotted(f.path))
    ]
    to_hash = []
    for row in manifest:
        f = present.get(row.path)
        if f is None:
            continue
        if f.stat.size != row.size:
            report.mismatched.append(Mismatch(row.path, "size", str(row.size), str(f.stat.size)))
        else:
            to_hash.append(f)
    own = state is None
    st = state if state is not None else TreeState.for_tree(root)
    try:
        digest = digest_files(to_hash, st, rehash=rehash, hooks=hooks)
    finally:
        if own:
            st.close()
    for f in to_hash:
        expected = manifest.get(f.path)
        actual = digest.checksums[f.path]["sha256"]
        if expected is not None and actual != expected.sha256:
            report.mismatched.append(Mismatch(f.path, "sha256", expected.sha256, actual))
    report.mismatched.sort(key=lambda m: m.path)
    report.checked = len(manifest)
    report.hashed_files = digest.hashed_files
    return report
