"""Which files of a directory ``ferry push`` sends, under which keys, in which group.

- ``all``: every regular file under DIR (sub-paths kept as keys), never our state
  (``DIR/.ferry``), dotfiles or markers (``*.<type>.done``); symlinks are not followed.
- ``catalog``: the files a cartloader ``catalog.yaml`` names, grouped as cartloader does:
  its leaves flattened to dotted keys, identity keys (``id``, ``title``, ``name``, ...)
  skipped; ``assets.basemap.sge.*`` and every other leaf are the core ("cartload
  basics"), other ``assets.basemap.*`` are basemaps, UMAP outputs and ``alias`` are
  optional; ``*.default`` basemap keys are names, not files. The catalog itself is core.
  A core or basemap file that is missing is an error naming its catalog key; a missing
  optional one a warning.
- ``files``: the named files, relative to DIR or absolute inside it.

A target with flat keys (``Abilities.sub_paths`` false) refuses a key with '/' unless
``flatten``; two files with one key are always an error naming both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ferry.core.errors import InputError

log = logging.getLogger(__name__)

STATE_DIR = ".ferry"
Group = Literal["core", "basemap", "optional"]
GROUP_ORDER: tuple[Group, ...] = ("core", "basemap", "optional")
# Catalog leaves that name things rather than files (cartloader's own list).
IDENTITY_KEYS = frozenset(
    {
        "id",
        "title",
        "name",
        "model_id",
        "proj_id",
        "decode_id",
        "cells_id",
        "cell_id",
        "square_id",
        "raw_pixel_col",
        "analysis",
    }
)
OPTIONAL_ENDINGS = ("umap.tsv", "umap.png", "umap.ind_png", "umap.pmtiles")


@dataclass(frozen=True)
class PushFile:
    key: str  # the key on the target
    path: Path
    size: int
    mtime_ns: int
    group: Group = "core"


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}.item_{i}")
    else:
        yield prefix, node


def _load_catalog(catalog: Path) -> dict[Any, Any]:
    import yaml  # here, not at the top: only --select catalog needs it (15 ms of every push's start)

    try:
        data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"catalog {catalog}: cannot read it: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"catalog {catalog}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"catalog {catalog}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"catalog {catalog}: must be a YAML mapping")
    return data


def catalog_groups(catalog: Path) -> list[tuple[str, str, Group]]:
    """``(catalog key, file name, group)`` for every file ``catalog`` names, in file order."""
    data = _load_catalog(catalog)
    out: list[tuple[str, str, Group]] = []
    for key, value in _leaves(data):
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        last = key.rsplit(".", 1)[-1]
        group: Group
        if key.startswith("assets.basemap"):
            if key.endswith("default"):
                continue
            group = "core" if key.startswith("assets.basemap.sge") else "basemap"
        elif last in IDENTITY_KEYS:
            continue
        elif key.endswith(OPTIONAL_ENDINGS) or last == "alias":
            group = "optional"
        else:
            group = "core"
        out.append((key, str(value), group))
    return out


def _inside(directory: Path, candidate: Path, what: str) -> Path:
    if "\x00" in str(candidate):  # no file has such a name; the OS would refuse it with a ValueError
        raise InputError(f"{what}: {str(candidate)!r} holds a NUL character, which no file name can")
    root = directory.resolve()
    path = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if path != root and root not in path.parents:
        raise InputError(f"{what}: {candidate} is outside {directory}")
    return path


def _stat_file(path: Path, what: str) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"{what}: {path} does not exist or cannot be read ({exc.strerror})") from exc
    if not path.is_file():
        raise InputError(f"{what}: {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what}: {path} is not readable")
    return st


def _walk(directory: Path, marker_suffix: str) -> Iterator[Path]:
    for root, dirs, names in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or name.endswith(marker_suffix) or path.is_symlink():
                continue
            yield path


Picked = list[tuple[Path, Group, str]]  # path, group, what names it (for messages)


@dataclass(frozen=True)
class _Request:
    root: Path  # DIR resolved
    directory: Path  # DIR as given, for messages
    catalog: Path | None
    named: Sequence[str]
    marker_suffix: str


def _pick_all(req: _Request) -> Picked:
    return [(p, "core", "file") for p in _walk(req.root, req.marker_suffix)]


def _pick_named(req: _Request) -> Picked:
    if not req.named:
        raise InputError("--select files needs --files FILE...")
    return [(_inside(req.root, Path(n), f"--files {n}"), "core", f"--files {n}") for n in req.named]


def _pick_catalog(req: _Request) -> Picked:
    root = req.root
    cat = _inside(root, req.catalog, "--catalog") if req.catalog is not None else root / "catalog.yaml"
    if req.catalog is None and not cat.is_file():
        raise InputError(f"--select catalog: {cat} does not exist (give --catalog FILE)")
    picked: Picked = []
    for key, name, group in catalog_groups(cat):
        path = _inside(root, Path(name), f"catalog key {key}")
        if not path.exists() and group == "optional":
            log.warning("catalog key %s: optional file %s is missing; not pushed", key, name)
            continue
        if not path.exists():
            raise InputError(f"catalog key {key} names {name}, which is not in {req.directory}")
        picked.append((path, group, f"catalog key {key}"))
    if cat.parent == root:
        picked.append((cat, "core", "the catalog"))
    return picked


# --select's values and what each picks.
_PICKERS = {"all": _pick_all, "catalog": _pick_catalog, "files": _pick_named}


def select_files(
    directory: Path,
    select: str,
    catalog: Path | None,
    named: Sequence[str],
    *,
    flatten: bool,
    sub_paths: bool,
    marker_suffix: str,
) -> list[PushFile]:
    """The files to push, grouped and keyed; InputError for anything wrong, before any request."""
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory")
    pick = _PICKERS.get(select)
    if pick is None:
        raise InputError(f"--select must be all, catalog or files, not {select!r}")
    root = directory.resolve()
    picked = pick(_Request(root, directory, catalog, named, marker_suffix))
    return _keyed(root, picked, flatten=flatten, sub_paths=sub_paths)


def _keyed(root: Path, picked: Picked, *, flatten: bool, sub_paths: bool) -> list[PushFile]:
    by_key: dict[str, PushFile] = {}
    seen: set[Path] = set()
    for path, group, what in picked:
        if path in seen and what.startswith("catalog"):
            continue  # a catalog may name one file under two keys
        seen.add(path)
        st = _stat_file(path, what)
        key = path.relative_to(root).as_posix()
        if "/" in key and not sub_paths:
            if not flatten:
                raise InputError(
                    f"{key}: the target's file names are flat; move it, or give --flatten to send it as {path.name}"
                )
            key = path.name
        if key in by_key:
            raise InputError(f"{by_key[key].path} and {path} would both be stored as {key!r}")
        by_key[key] = PushFile(key, path, st.st_size, st.st_mtime_ns, group)
    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    return sorted(by_key.values(), key=lambda f: order[f.group])
