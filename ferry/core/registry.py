"""Name -> implementation registries, imported lazily (as fsspec's protocol registry).

Each kind of part (sources, targets, fetchers, metadata profiles) has one ``Registry``:
a system joins with one line, ``REGISTRY.register("name", "package.module:Attr")``. The
module is imported only when the name is asked for, so a heavy optional dependency
(aiobotocore for S3, dask for clusters) costs nothing to runs that do not use it, and a
missing one is a ``ConfigError`` with the install hint instead of an ImportError.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ferry.core.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    path: str  # "package.module:Attr"
    hint: str | None  # what to install when the import fails, e.g. "pip install 'dataferry[s3]'"
    defaults: Mapping[str, Any]  # configuration defaults this implementation wants (no import needed)


class Registry(Generic[T]):
    """The implementations of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "target type", "source", "fetcher", ... (for messages)
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, T] = {}

    def register(
        self, name: str, path: str, *, hint: str | None = None, defaults: Mapping[str, Any] | None = None
    ) -> None:
        """Declare ``name`` as ``package.module:Attr`` (replacing an earlier declaration)."""
        if ":" not in path:
            raise ValueError(f"registry path {path!r} must be 'package.module:Attr'")
        self._entries[name] = Entry(path, hint, dict(defaults or {}))
        self._loaded.pop(name, None)

    def defaults(self, name: str) -> Mapping[str, Any]:
        """The configuration defaults declared with ``name`` ({} for an unknown name)."""
        entry = self._entries.get(name)
        return entry.defaults if entry is not None else {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, *, where: str = "") -> T:
        """The implementation registered as ``name``; ConfigError naming the known ones."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries.get(name)
        prefix = f"{where}: " if where else ""
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r} (known: {known})")
        module_name, _, attr = entry.path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; install it with {entry.hint}" if entry.hint else ""
            raise ConfigError(f"{prefix}{self.kind} {name!r} needs {exc.name or module_name}{hint}") from exc
        value: T = getattr(module, attr)
        self._loaded[name] = value
        return value
