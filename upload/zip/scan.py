"""One sequential read of a bundle that checks every entry against its source's CRC32.

The scanner walks the file from byte 0 to EOF exactly once: it parses each entry's local
header, checks its name, and recomputes the CRC32 of the entry's data from the bytes on
disk (inflating deflated entries) against the CRC computed from the source when it was
written. The scan can trail the writer in a thread: entries are handed over as they are
finished, and the scanner reads bytes that are already final.

It computes no whole-file digest. The bundle's md5 (~720 MiB/s on one core here, about
five times the cost of the CRC32 pass) is computed by the upload while it reads the bundle
to send it (``upload.targets.http.FileRange``): the read happens there anyway, and hashing here
capped the zip stage near half the speed of ``cp`` (docs/benchmarks.md, Zipping).
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass

from upload.zip.format import BundleCorrupt, EntryRecord, crc_hex

CHUNK = 1024 * 1024
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_FLAG_UTF8 = 0x800
_FLAG_DESCRIPTOR = 0x08


@dataclass(frozen=True)
class ScanResult:
    size: int  # bytes from 0 to EOF when the scan finished


class Scanner:
    """Reads ``path`` sequentially; ``entry()`` for each entry in offset order, then ``finish()``."""

    def __init__(self, path: str, *, where: str) -> None:
        self.where = where
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in finish()/close()
        self._pos = 0
        self._buf = bytearray(CHUNK)  # entry data is read into this one buffer, not new bytes
        self._done = False

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._fh.read(n) if n else b""
        while data is not None and len(data) < n:
            more = self._fh.read(n - len(data))
            if not more:
                raise BundleCorrupt(f"bundle {self.where} ends inside {what} (truncated)")
            data += more
        assert data is not None
        self._pos += len(data)
        return data

    def entry(self, e: EntryRecord, expected_crc: int) -> None:
        """Check one entry: local header at the expected offset, its name, its data's CRC."""
        if e.header_offset != self._pos:
            raise BundleCorrupt(
                f"bundle {self.where}: entry {e.name!r} starts at byte {e.header_offset}, expected {self._pos}",
                file=e.name,
            )
        head = self._read_exact(_LOCAL.size, f"the header of {e.name!r}")
        sig, _ver, flags, method, _t, _d, crc, _cs, _us, nlen, xlen = _LOCAL.unpack(head)
        if sig != _LOCAL_SIG:
            raise BundleCorrupt(f"bundle {self.where}: no local header for {e.name!r}", file=e.name)
        raw_name = self._read_exact(nlen, f"the name of {e.name!r}")
        self._read_exact(xlen, f"the extra field of {e.name!r}")
        name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
        if name != e.name:
            raise BundleCorrupt(f"bundle {self.where}: local header names {name!r}, directory {e.name!r}", file=e.name)
        if flags & _FLAG_DESCRIPTOR or method != e.compress_type or crc != (e.crc32 & 0xFFFFFFFF):
            raise BundleCorrupt(f"bundle {self.where}: local header of {e.name!r} disagrees with the directory")
        actual_crc, size = self._data(e)
        if size != e.file_size:
            raise BundleCorrupt(
                f"bundle {self.where}: entry {e.name!r} holds {size} bytes, expected {e.file_size}", file=e.name
            )
        if actual_crc != (expected_crc & 0xFFFFFFFF):
            raise BundleCorrupt(
                f"bundle {self.where}: entry {e.name!r} has CRC32 {crc_hex(actual_crc)} on disk, "
                f"the source had {crc_hex(expected_crc)}",
                file=e.name,
            )

    def _data(self, e: EntryRecord) -> tuple[int, int]:
        """(crc32, uncompressed size) of the entry's data as stored on disk."""
        inflater = None
        if e.compress_type == zipfile.ZIP_DEFLATED:
            inflater = zlib.decompressobj(-15)
        elif e.compress_type != zipfile.ZIP_STORED:
            raise BundleCorrupt(f"bundle {self.where}: entry {e.name!r} uses compression {e.compress_type}")
        crc, size, left = 0, 0, e.compress_size
        view = memoryview(self._buf)
        while left > 0:
            n = self._fh.readinto(view[: min(CHUNK, left)])
            if not n:
                raise BundleCorrupt(f"bundle {self.where} ends inside entry {e.name!r} (truncated)", file=e.name)
            chunk = view[:n]
            self._pos += n
            left -= n
            if inflater is None:
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
            else:
                try:
                    out = inflater.decompress(chunk)
                except zlib.error as exc:
                    raise BundleCorrupt(f"bundle {self.where}: entry {e.name!r} does not inflate: {exc}") from exc
                crc = zlib.crc32(out, crc)
                size += len(out)
        if inflater is not None:
            tail = inflater.flush()
            crc, size = zlib.crc32(tail, crc), size + len(tail)
        return crc, size

    def finish(self) -> ScanResult:
        """The file's size now (entries, then the central directory and end records, which
        ``read_directory`` parses separately)."""
        size = os.fstat(self._fh.fileno()).st_size
        self._fh.close()
        self._done = True
        if size < self._pos:
            raise BundleCorrupt(f"bundle {self.where} shrank while it was read")
        return ScanResult(size)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._fh.close()


class TrailingScanner:
    """Runs a ``Scanner`` in a thread that follows a writer: ``push`` finished entries, then ``end``.

    The writer only pushes an entry once its bytes (local header rewritten with the CRC)
    are flushed, so the scanner never reads bytes that will still change.
    """

    _END = "end"
    _ABANDON = "abandon"

    def __init__(self, path: str, *, where: str) -> None:
        self._scanner = Scanner(path, where=where)
        self._queue: queue.Queue[tuple[EntryRecord, int] | str] = queue.Queue()
        self._result: ScanResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-scan", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item == self._END:
                    self._result = self._scanner.finish()
                    return
                if item == self._ABANDON or isinstance(item, str):
                    self._scanner.close()
                    return
                self._scanner.entry(*item)
        # The scan thread's only exit: whatever stops it must reach the writer's thread,
        # which re-raises it in end(); a narrower catch would leave end() without the cause.
        except BaseException as exc:  # noqa: BLE001 - thread boundary; re-raised by end()
            self.error = exc
            self._scanner.close()

    def push(self, entry: EntryRecord, expected_crc: int) -> None:
        self._queue.put((entry, expected_crc))

    def end(self) -> ScanResult:
        self._queue.put(self._END)
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self._result is not None
        return self._result

    def abandon(self) -> None:
        """Stop after a writer failure; the scan result is not wanted."""
        self._queue.put(self._ABANDON)
        self._thread.join()
