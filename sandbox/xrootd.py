"""Start and stop a local Debian ``xrootd`` that serves a directory read-only on loopback.

The server is the real thing (``xrootd-server``), so tests and the demo exercise the
same protocol, checksum queries and error codes as ``eospublic.cern.ch``. XRootD has no
bind-address option; ``xrd.allow host`` refuses every client that is not this machine's
loopback, and the export is read-only, so nothing outside can read or write through it.

XRootD refuses to run as root: as root it is started with ``-R <user>`` and then needs
its admin/log directory writable, and the data tree readable (every ancestor directory
searchable), by that user. ``start`` checks this first and names the directory that
blocks it, instead of letting the server answer "permission denied" to every request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import grp
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Users the Debian package (or base system) provides, in order of preference.
RUN_USERS = ("xrootd", "daemon", "nobody")


class XRootDError(RuntimeError):
    """The local xrootd could not be started (the message carries the log tail)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (small race: the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def pick_run_user() -> str | None:
    """The user xrootd should switch to (``-R``), or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in RUN_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise XRootDError(f"running as root, but none of the users {', '.join(RUN_USERS)} exists for xrootd -R")


def _ids(user: str) -> tuple[int, set[int]]:
    entry = pwd.getpwnam(user)
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    groups.add(entry.pw_gid)
    return entry.pw_uid, groups


def _allowed(st: os.stat_result, uid: int, gids: set[int], bits: int) -> bool:
    """Unix permission check for another user: owner bits, else group bits, else other bits."""
    if st.st_uid == uid:
        return bool(st.st_mode & (bits << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bits << 3))
    return bool(st.st_mode & bits)


def check_readable_by(path: Path, user: str | None, *, need_list: bool = True) -> None:
    """Raise ``XRootDError`` naming the directory that keeps ``user`` from reading ``path``.

    Only ``path`` and its ancestors are checked (not every file below); the data generator
    writes files world-readable. ``need_list=False``: entering ``path`` is enough.
    """
    if user is None:
        return
    uid, gids = _ids(user)
    path = path.resolve()
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if not _allowed(st, uid, gids, 0o1):
            raise XRootDError(
                f"xrootd runs as user {user!r}, who cannot enter {d} (mode {stat.filemode(st.st_mode)}); "
                f"serve a directory under a world-searchable parent (e.g. a fresh dir in {tempfile.gettempdir()}), "
                f"or make {d} searchable with 'chmod o+x {d}'"
            )
    if need_list and not _allowed(path.stat(), uid, gids, 0o4):
        raise XRootDError(f"xrootd runs as user {user!r}, who cannot list {path}; try 'chmod o+rx {path}'")


def render_config(*, data_root: Path, port: int, admin_dir: Path) -> str:
    return "\n".join(
        [
            "# written by dataferry sandbox/xrootd.py",
            "all.export / r/o",  # read-only: the sandbox only serves downloads
            f"oss.localroot {data_root}",
            f"xrd.port {port}",
            "xrootd.chksum adler32",  # `xrdfs query checksum` and `xrdcp --cksum adler32:source`
            # No bind-address directive exists; refuse every client that is not loopback.
            "xrd.allow host localhost",
            f"xrd.allow host {LOOPBACK}",
            f"all.adminpath {admin_dir}",
            f"all.pidpath {admin_dir}",
            "",
        ]
    )


# Servers still running at interpreter exit (e.g. after KeyboardInterrupt) are killed.
_LIVE: weakref.WeakSet[XRootDServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class XRootDServer:
    """One xrootd process serving ``data_root`` at ``root://127.0.0.1:<port>``.

    Use as ``with XRootDServer(root) as xrd:`` or ``async with XRootDServer(root) as xrd:``;
    ``start()``/``stop()`` are also public. ``stop`` is idempotent and always reaps the process.
    """

    def __init__(
        self,
        data_root: Path | str,
        *,
        port: int | None = None,
        run_dir: Path | str | None = None,
        user: str | None = None,
        startup_timeout: float = 20.0,
        binary: str = "xrootd",
    ) -> None:
        self.data_root = Path(data_root).resolve()
        self.requested_port = port
        self.port = 0
        self.user = user if user is not None else pick_run_user()
        self.startup_timeout = startup_timeout
        self.binary = binary
        self._own_run_dir = run_dir is None
        self._run_dir_arg = Path(run_dir) if run_dir is not None else None
        self.run_dir = Path()
        self.process: subprocess.Popen[bytes] | None = None

    # --- public API ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``root://127.0.0.1:PORT``; append ``//eos/...`` for a file URI."""
        return f"root://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "xrootd.log"

    def start(self) -> XRootDServer:
        if self.process is not None:
            return self
        if shutil.which(self.binary) is None:
            raise XRootDError(f"{self.binary!r} not found: install the Debian package xrootd-server (make system-deps)")
        if not self.data_root.is_dir():
            raise XRootDError(f"data root {self.data_root} is not a directory")
        check_readable_by(self.data_root, self.user)
        self._make_run_dir()
        attempts = 3
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            try:
                self._launch()
                self._wait_ready()
                log.info("xrootd serving %s at %s (pid %s)", self.data_root, self.url, self.pid)
                return self
            except XRootDError as exc:
                tail = self.log_tail()
                code = self.process.poll() if self.process is not None else None
                self.stop(_keep_run_dir=True)
                # Another process may have taken the free port between probe and bind; and
                # xrootd 5 now and then dies of SIGSEGV before its first log line when
                # several start at once (seen with parallel test workers): both are retried.
                port_taken = "already in use" in tail and not self.requested_port
                crashed = code is not None and code < 0
                if (port_taken or crashed) and attempt + 1 < attempts:
                    log.warning("xrootd start-up failed (%s), trying again", exc)
                    continue
                self._remove_run_dir()
                raise XRootDError(f"{exc}\n--- xrootd log tail ({self.log_path}) ---\n{tail}") from None
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 5.0, *, _keep_run_dir: bool = False) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            _LIVE.discard(self)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if not _keep_run_dir:
            self._remove_run_dir()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def file_url(self, path: str) -> str:
        """The root:// URI of ``path`` (``/eos/opendata/...``, relative to ``data_root``)."""
        return f"{self.url}//{path.lstrip('/')}"

    def query_checksum(self, path: str, timeout: float = 30.0) -> str:
        """Ask the server (``xrdfs query checksum``) for a file's adler32, e.g. ``adler32:0a1b2c3d``."""
        out = subprocess.run(
            ["xrdfs", self.url, "query", "checksum", "/" + path.lstrip("/")],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise XRootDError(f"xrdfs query checksum {path} failed: {out.stderr.strip() or out.stdout.strip()}")
        algorithm, _, value = out.stdout.strip().partition(" ")
        return f"{algorithm}:{value.strip()}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> XRootDServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> XRootDServer:
        # Startup polls and sleeps: keep it off the event loop.
        try:
            return await asyncio.to_thread(self.start)
        except BaseException:
            self.stop()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"XRootDServer({self.data_root}, url={self.url if self.port else None}, pid={self.pid})"

    # --- internals -----------------------------------------------------------------------

    def _make_run_dir(self) -> None:
        if self._run_dir_arg is not None:
            self._run_dir_arg.mkdir(parents=True, exist_ok=True)
            self.run_dir = self._run_dir_arg.resolve()
        else:
            # Private dir in the system temp dir: pytest's tmp dirs are 0700, which the
            # unprivileged server user could not enter for its admin socket and log.
            self.run_dir = Path(tempfile.mkdtemp(prefix="ferry-xrootd-"))
            os.chmod(self.run_dir, 0o755)
        if self.user is not None:
            uid, _ = _ids(self.user)
            os.chown(self.run_dir, uid, -1)
            check_readable_by(self.run_dir, self.user)

    def _remove_run_dir(self) -> None:
        if self._own_run_dir and self.run_dir != Path() and self.run_dir.exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _launch(self) -> None:
        cfg = self.run_dir / "xrootd.cfg"
        cfg.write_text(render_config(data_root=self.data_root, port=self.port, admin_dir=self.run_dir))
        cfg.chmod(0o644)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        cmd = [self.binary, "-c", str(cfg), "-l", str(self.log_path)]
        if self.user is not None:
            cmd += ["-R", self.user]
        # Own session: a Ctrl-C in the terminal reaches us, and we stop the server in order.
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.run_dir,
            start_new_session=True,
        )
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise XRootDError(f"xrootd exited with code {self.process.returncode} during start-up")
            if "initialization completed" in self.log_tail(400) and _port_open(self.port):
                return
            time.sleep(0.05)
        raise XRootDError(f"xrootd did not become ready on port {self.port} within {self.startup_timeout:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0
