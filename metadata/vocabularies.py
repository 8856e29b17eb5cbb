"""The stock InvenioRDM vocabulary ids, read from ``metadata/vocabularies.json``.

That file is the one list: the profiles validate against it, ``metadata/kinds.py`` maps
subtypes onto its resource types, and the sandbox repository (``sandbox/repository_validate.py``)
reads the same file to know which ids exist. This module imports nothing of the package,
so ``metadata.kinds`` can use it at import time.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("vocabularies.json")


@cache
def _vocabularies() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PATH.read_text(encoding="utf-8"))
    return data


def vocabulary(name: str) -> frozenset[str]:
    """The ids of one stock vocabulary (``resource_types``, ``relation_types``, ...)."""
    return frozenset(_vocabularies()[name])


def ordered(name: str) -> tuple[str, ...]:
    """The ids of one stock vocabulary in the file's order (the upstream fixture's)."""
    return tuple(_vocabularies()[name])
