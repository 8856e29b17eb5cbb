"""Process memory policy: one malloc arena for all threads.

glibc gives threads their own heaps ("arenas", up to 8 per core) as soon as two of them
allocate at the same time. The download threads and the XRootD client's threads pass
4 MiB buffers around: a buffer freed in one arena is not reused by a thread allocating in
another, so each arena faults in and keeps its own set of big buffers. Measured on this
project's download benchmark (tmpfs destination, glibc 2.36, 2 cores; see
docs/benchmarks.md): with one arena 500 x 2 MiB took 1.12-1.18 s instead of 1.55-1.58 s
(system time 0.8 instead of 1.3 s: fewer page faults), and peak RSS 71 MB instead of
101-107 MB; 1 GiB 1.03 s instead of 1.19-1.24 s, 91-95 MB instead of 119-123 MB.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def one_malloc_arena() -> bool:
    """Ask glibc for a single malloc arena; False where that is not glibc (then nothing
    changes). Call it early: threads that already have an arena keep it."""
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname on Linux; elsewhere keep the default
        done = bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    if not done:
        log.debug("mallopt(M_ARENA_MAX) refused; keeping the allocator's default")
    return done
