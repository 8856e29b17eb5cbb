"""Helpers shared by the InvenioRDM target tests and the target conformance suite.

(A test module by name so it stays inside this part's files; it holds no tests itself.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from ferry.core.config import TargetConfig
from ferry.core.retry import RetryPolicy
from tests.fixtures_repository import RepositoryHandle
from upload.targets.base import RequestLimiter
from upload.targets.invenio import InvenioTarget

KiB = 1024
FAST = RetryPolicy(attempts=4, base=0.01, maximum=0.05)


def rdm_body(recid: str, title: str = "DELPHI data") -> dict[str, Any]:
    """Stock InvenioRDM metadata carrying the recid as an identifier (found by rdm_query)."""
    return {
        "access": {"record": "public", "files": "public"},
        "files": {"enabled": True},
        "metadata": {
            "resource_type": {"id": "dataset"},
            "title": title,
            "publication_date": "2024-05-01",
            "publisher": "CERN Open Data Portal",
            "creators": [{"person_or_org": {"type": "organizational", "name": "DELPHI collaboration"}}],
            "identifiers": [{"identifier": f"cernopendata:{recid}", "scheme": "other"}],
        },
    }


def rdm_query(recid: str) -> str:
    return f'metadata.identifiers.identifier:"cernopendata:{recid}"'


def particles_body(recid: str, title: str = "DELPHI data") -> dict[str, Any]:
    body = rdm_body(recid, title)
    body["metadata"]["recid"] = int(recid)
    return body


def particles_query(recid: str) -> str:
    return f"metadata.recid:{recid}"


def make_config(
    repository: RepositoryHandle,
    tmp_path: Path,
    *,
    token: str | None = None,
    model: str | None = None,
    multipart_threshold: int = 64 * KiB,
    part_size: int = 16 * KiB,
    **options: Any,
) -> TargetConfig:
    token_file = tmp_path / f"token-{os.urandom(4).hex()}"
    token_file.write_text(token if token is not None else repository.token)
    # TargetConfig fields go to the config; anything else is a type-specific option.
    known = {f.name for f in dataclasses.fields(TargetConfig)}
    fields = {k: v for k, v in options.items() if k in known}
    extra = {k: v for k, v in options.items() if k not in known}
    opts: dict[str, Any] = {"checksum_timeout": 15.0, "file_attempts": 3, **extra}
    return TargetConfig(
        name="sandbox",
        type="invenio",
        url=repository.url,
        token_file=str(token_file),
        model=model,
        multipart_threshold=multipart_threshold,
        part_size=part_size,
        options=opts,
        **fields,
    )


def make_target(
    repository: RepositoryHandle,
    tmp_path: Path,
    *,
    limiter: RequestLimiter | None = None,
    policy: RetryPolicy = FAST,
    **kw: Any,
) -> InvenioTarget:
    return InvenioTarget(make_config(repository, tmp_path, **kw), limiter=limiter, policy=policy)


def data_file(tmp_path: Path, name: str, size: int, seed: int = 0) -> tuple[Path, str]:
    """A file of ``size`` pseudo-random bytes and its md5 hex."""
    path = tmp_path / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(f"{name}-{seed}".encode()).digest() * 64  # 2 KiB pattern
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def log_rows(repository: RepositoryHandle, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
    return [
        r
        for r in repository.requests_log()
        if (method is None or r.get("method") == method) and contains in str(r.get("path", ""))
    ]
