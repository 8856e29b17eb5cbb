"""Run cernopendata-client's XRootD downloads against a local xrootd named eospublic.cern.ch.

cernopendata-client (1.0.2) rebuilds every XRootD URL as ``root://eospublic.cern.ch/`` +
the path, whatever the record's URI says, and on the default port 1094. So the only way to
let the unpatched client download from the sandbox is to make that name reach a local
server, without touching the machine: this module runs in fresh network and mount
namespaces (``unshare --net --mount``), where ``/etc/hosts`` is a bind-mounted copy naming
eospublic.cern.ch 127.0.0.1, loopback is the namespace's own (nothing outside can be
reached, so nothing can leak to the real host either) and port 1094 is free by
construction. It starts the real Debian xrootd on 1094 and the portal stand-in (with the
portal's own ``root://eospublic.cern.ch//eos/...`` URIs) inside, runs the client, and
exits with the client's code.

    unshare --net --mount python -m tests.eospublic_alias DATA_ROOT RECORDS_JSON OUT_DIR -- CLIENT_ARGS...
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox.portal import start_portal
from sandbox.xrootd import XRootDServer

ALIAS = "eospublic.cern.ch"
XROOTD_PORT = 1094  # the client never names a port
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """``ip link set lo up`` without iproute2 (a new network namespace starts with lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


def alias_hosts() -> None:
    """This namespace's /etc/hosts: the machine's, plus the alias (the real file is untouched)."""
    hosts = Path(tempfile.mkdtemp(prefix="ferry-hosts-")) / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {ALIAS}\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


async def main(records: list[dict[str, object]], data_root: Path, out_dir: Path, client_args: list[str]) -> int:
    client = Path(sys.executable).with_name("cernopendata-client")
    with XRootDServer(data_root, port=XROOTD_PORT):
        portal = await start_portal(records, data_root=data_root, public_uris=True)
        try:
            args = [str(client), *client_args, "--server", portal.url]
            proc = await asyncio.create_subprocess_exec(*args, cwd=out_dir, stdin=subprocess.DEVNULL)
            return await proc.wait()
        finally:
            await portal.stop()


if __name__ == "__main__":
    root, recs, out, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: DATA_ROOT RECORDS_JSON OUT_DIR -- CLIENT_ARGS..."
    loopback_up()
    alias_hosts()
    sys.exit(asyncio.run(main(json.loads(Path(recs).read_text()), Path(root), Path(out), rest)))
