"""`ferry push`'s plan: which files to send, and whether the record fits the target after.

Pure decisions over what is on the target (``have``) and the local md5s; each line of the
plan goes to ``plan`` (printed, and all a dry run does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ferry.core.checksums import Checksum
from ferry.core.errors import QuotaError
from ferry.progress import human_bytes
from pipeline.push_select import PushFile
from upload.targets.base import RemoteFile, TargetLimits


def decide(
    files: list[PushFile],
    hashes: Mapping[str, Checksum],
    have: Mapping[str, RemoteFile],
    *,
    restart: bool,
    plan: Callable[[str], None],
) -> tuple[set[str], list[str]]:
    """Keys to send and keys to skip (same size and md5 on the target, unless ``restart``)."""
    todo: set[str] = set()
    skipped: list[str] = []
    for f in files:
        there = have.get(f.key)
        same = there is not None and there.matches(f.size, hashes[f.key])
        if same and not restart:
            skipped.append(f.key)
            plan(f"  skip    {f.key} ({human_bytes(f.size)}, same md5 on the target)")
            continue
        todo.add(f.key)
        verb = "replace" if there is not None else "send   "
        plan(f"  {verb} {f.key} ({human_bytes(f.size)}, {f.group})")
    sent = sum(f.size for f in files if f.key in todo)
    plan(f"  {len(todo)} to send ({human_bytes(sent)}), {len(files) - len(todo)} to skip")
    return todo, skipped


def check_limits(
    limits: TargetLimits,
    files: list[PushFile],
    have: Mapping[str, RemoteFile],
    *,
    recid: str,
    plan: Callable[[str], None],
) -> None:
    """A ``QuotaError`` before any upload when the record would exceed the target's limits."""
    after = {k: (f.size or 0) for k, f in have.items()}
    after.update({f.key: f.size for f in files})
    count, total = len(after), sum(after.values())
    plan(
        f"  limits: {count} file(s) of {limits.max_files}, {human_bytes(total)} of "
        f"{human_bytes(limits.max_record_size)} after the push ({len(have)} there now)"
    )
    if count > limits.max_files:
        raise QuotaError(
            f"{count} files after the push ({len(have)} on the target + {len(set(after) - set(have))} new) "
            f"exceed the target's limit of {limits.max_files} per record; nothing was uploaded",
            recid=recid,
        )
    if total > limits.max_record_size:
        raise QuotaError(
            f"{total} bytes after the push exceed the target's limit of {limits.max_record_size} per record; "
            "nothing was uploaded",
            recid=recid,
        )
    for f in files:
        if f.size > limits.max_file_size:
            raise QuotaError(f"{f.size} bytes exceed the target's per-file limit", recid=recid, file=f.key)
