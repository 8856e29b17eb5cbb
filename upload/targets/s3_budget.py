"""A byte budget shared by every S3 upload of a run: the bound on part bytes in memory.

Each multipart part (and each single PUT's body) is reserved here *before* its bytes are
read from the source and released once the server has answered for it, so the bytes held
in parts at any moment are at most ``limit``, whatever the number of files streaming at
once or their parts in flight. ``parts_in_flight`` still caps the requests per upload;
the budget caps the memory of all of them together.

A part larger than the whole budget (a huge object whose 10,000-part cap forces big parts)
is let through alone when nothing else is held, so no upload can wait for ever.
"""

from __future__ import annotations

import asyncio

MiB = 1024 * 1024
DEFAULT_BUDGET = 96 * MiB  # ~100 MB of parts: peak RSS of a 2 GiB mirror stays < 300 MB


class ByteBudget:
    def __init__(self, limit: int = DEFAULT_BUDGET) -> None:
        if limit < 1:
            raise ValueError(f"a byte budget must be positive, not {limit}")
        self.limit = limit
        self.used = 0
        self.peak = 0  # the most ever held at once (the test of the bound reads it)
        self._freed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def fits(self, nbytes: int) -> bool:
        return self.used == 0 or self.used + nbytes <= self.limit

    def _event(self) -> asyncio.Event:
        # One event per loop: a target may serve several asyncio.run() calls in turn.
        loop = asyncio.get_running_loop()
        if self._freed is None or self._loop is not loop:
            self._freed, self._loop = asyncio.Event(), loop
        return self._freed

    async def acquire(self, nbytes: int) -> None:
        while not self.fits(nbytes):
            freed = self._event()
            freed.clear()
            await freed.wait()
        # No await between the check and the count: nothing else runs in between.
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def release(self, nbytes: int) -> None:
        """Synchronous, so a ``finally`` of a cancelled upload always gives its bytes back."""
        self.used -= nbytes
        if self.used < 0:
            raise RuntimeError(f"byte budget released {-self.used} bytes more than it held")
        if self._freed is not None:
            self._freed.set()
