"""Whose fault is a checksum mismatch after an upload: the target's, or the local copy's?

A file verified at download is trusted afterwards while its size and mtime match the
manifest (nothing re-reads terabytes to upload them). A copy corrupted in place later (a
bad disk, a tool that rewrote bytes and kept the mtime) is then sent, and the target's
checksum disagrees with the one verified. Retrying sends the same wrong bytes, and
blaming the target sends the user the wrong way: the local file is hashed once again
and, if it is the culprit, the file fails with the local problem and the fix named.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ferry.core.checksums import Checksum, hash_file
from ferry.core.errors import VerificationError


async def blame_local_copy(path: Path, verified: Checksum, *, recid: str, key: str) -> None:
    """Raise a non-retryable error naming the local problem if ``path`` no longer hashes to
    ``verified`` (the value recorded when it was verified); return if it still does."""
    try:
        hasher = await asyncio.to_thread(hash_file, str(path), (verified.algorithm,))
    except OSError as exc:
        now = f"unreadable ({exc.strerror or exc})"
    else:
        value = hasher.hexdigests()[verified.algorithm]
        if value == verified.value:
            return  # the local copy is the verified file: the mismatch is the transfer's or the target's
        now = f"{verified.algorithm}:{value}"
    dest = path.parent
    for _ in Path(key).parts:
        dest = dest.parent
    err = VerificationError(
        f"the local copy {path} changed after it was verified: it is now {now}, it was verified as "
        f"{verified} (its size and mtime are unchanged, so it was trusted); a local problem, not the "
        f"target's. Fix: `ferry download {recid} --dest {dest} --verify-existing` fetches it again, "
        "then run this command again",
        expected=str(verified),
        actual=now,
        recid=recid,
        file=key,
    )
    err.retryable = False  # sending the same bytes again would fail the same way
    raise err
