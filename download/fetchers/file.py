"""``file://`` URIs: local files as a fetcher, so the download engine copies (and verifies,
and resumes) them exactly as it does remote ones. Reads run in a worker thread."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from download.base import ChunkSink
from ferry.core.errors import SourceError, SourceFileMissing

CHUNK = 4 * 1024 * 1024


def file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise SourceError(f"not a local file URL: {url!r}")
    return Path(os.fsdecode(unquote_to_bytes(parts.path)))


class FileFetcher:
    scheme = "file"

    def __init__(self, *, chunk_size: int = CHUNK) -> None:
        self.chunk_size = chunk_size

    async def fetch(self, url: str, sink: ChunkSink, *, start: int, expected_size: int | None) -> int:
        path = file_path(url)
        try:
            fh = await asyncio.to_thread(open, path, "rb", buffering=0)
        except FileNotFoundError:
            raise SourceFileMissing(f"no such file: {path}", file=url) from None
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}", file=url) from exc
        try:
            size = os.fstat(fh.fileno()).st_size
            offset = start
            while offset < size:
                want = min(self.chunk_size, size - offset)
                await sink.reserve(want)
                try:
                    data = await asyncio.to_thread(os.pread, fh.fileno(), want, offset)
                except BaseException:
                    sink.release(want)
                    raise
                if not data:
                    sink.release(want)
                    break  # the file shrank meanwhile: the engine sees the short size
                await sink.put(offset, data, reserved=want)
                offset += len(data)
            return size
        finally:
            fh.close()

    async def read_small(self, url: str, *, max_size: int) -> bytes:
        path = file_path(url)
        try:
            size = path.stat().st_size
            if size > max_size:
                raise SourceError(f"{path} is {size} bytes, more than {max_size}", file=url)
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise SourceFileMissing(f"no such file: {path}", file=url) from None

    async def close(self) -> None:
        return None
