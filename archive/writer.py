"""The threads that write and hash a download's bytes, off the event loop, with few hand-overs.

Why not ``asyncio.to_thread``: a download of 1,000 small files and two large ones made
~3,000 of those calls, each a submit to the default pool, a worker woken, a future
chained back and the loop woken through its self-pipe; with the loop, the pool's five
threads and the S3 server all wanting two cores, every hand-over of the GIL was a futex
call (76,000 in one download, strace -c) and the loop stood still for many of them.

Here a fixed number of threads (2: one core hashes sha256 at ~1.8 GB/s, and two large
files stream at once) take jobs from one queue, and each thread hands its finished jobs
back to the loop together, one wake-up for everything it did since its last one.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Writers"]

T = TypeVar("T")
_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


class Writers:
    """``await writers.run(fn, *args)``: ``fn(*args)`` in one of the threads. Use as ``async with``."""

    def __init__(
        self,
        threads: int = 2,
        *,
        name: str = "ferry-writer",
        on_exit: Callable[[], None] | None = None,
        collect_every: float | None = None,
    ) -> None:
        self._threads = max(0, threads)  # 0: none (a pool this run does not need)
        self._name = name
        self._on_exit = on_exit  # run in each thread as it stops (a fetch thread's connection)
        # Set: finished jobs are collected by the loop this often (seconds) instead of handed
        # back when a thread's queue runs dry. For a queue that holds a whole download: it
        # never runs dry, and a long job would hold the short ones done before it.
        self._collect_every = collect_every
        self._collected: collections.deque[_Done] = collections.deque()
        self._collector: asyncio.Task[None] | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Writers:
        self._loop = asyncio.get_running_loop()
        for n in range(self._threads):
            worker = threading.Thread(target=self._work, name=f"{self._name}-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        if self._collect_every is not None:
            self._collector = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _ in self._workers:
            self._jobs.put(None)
        # Joined in a thread: a job still writing must finish (it may hold an open file).
        for worker in self._workers:
            await asyncio.to_thread(worker.join)
        self._workers.clear()
        if self._collector is not None:
            self._collector.cancel()
            self._collect_now()

    async def _collect(self) -> None:
        assert self._collect_every is not None
        while True:
            await asyncio.sleep(self._collect_every)
            self._collect_now()

    def _collect_now(self) -> None:
        done = []
        while self._collected:
            done.append(self._collected.popleft())
        _settle(done)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._loop is None or not self._workers:
            raise RuntimeError("Writers used outside its 'async with'")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        try:
            self._serve()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _serve(self) -> None:
        assert self._loop is not None
        if self._collect_every is not None:
            while (job := self._jobs.get()) is not None:
                self._collected.append(_run(job))  # deque.append: safe from any thread
            return
        while (job := self._jobs.get()) is not None:
            done: list[_Done] = []
            while job is not None:
                done.append(_run(job))
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    job = None
                else:
                    if job is None:  # the stop sign: settle what is done first, then stop
                        self._loop.call_soon_threadsafe(_settle, done)
                        return
            self._loop.call_soon_threadsafe(_settle, done)


def _run(job: _Job) -> _Done:
    future, fn, args = job
    try:
        return future, fn(*args), None
    except BaseException as exc:  # noqa: BLE001  # handed to the awaiting coroutine
        return future, None, exc


def _settle(done: list[_Done]) -> None:
    for future, result, exc in done:
        if future.cancelled():  # its coroutine was cancelled: nobody wants the outcome
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
