"""Dask is an optional extra: without it every command still loads, and only --cluster says
what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK_DASK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("distributed", "dask"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
from ferry.cli import main
sys.exit(main(sys.argv[1:]))
"""
REPO = Path(__file__).resolve().parents[1]


def ferry_without_dask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_DASK, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_bulk_and_mirror_load_without_dask() -> None:
    for command in ("bulk", "mirror", "upload"):
        proc = ferry_without_dask(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout and "Traceback" not in proc.stderr
