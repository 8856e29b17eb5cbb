"""Recid list files for ``ferry bulk --recids FILE`` and ``ferry cache build --recids FILE``.

One recid a line; ``#`` starts a comment (whole line or after the recid); blank lines and
surrounding whitespace are ignored. A portal record URL (``.../record/12345``) is accepted
for the recid it names. Duplicates are dropped (the first occurrence keeps its place) with a
warning. A bad line is an error naming its line number, collected, not fatal: the good lines
still run and the caller decides the exit code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ferry.core.errors import InputError

_RECID = re.compile(r"[0-9]{1,12}")
_RECORD_URL = re.compile(r"https?://[^\s/]+/records?/([0-9]{1,12})/?(?:[?#].*)?")


@dataclass
class RecidList:
    """The parsed list: ``recids`` in file order, plus what was wrong or odd, by line."""

    recids: list[str] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # recid -> line it came from

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_recids(text: str, *, source: str = "recid list") -> RecidList:
    """Parse the text of a recid list; ``source`` names it in messages (usually the path)."""
    out = RecidList()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lstrip("\ufeff")
        if not line:
            continue
        recid = _recid_of(line)
        if recid is None:
            shown = line if len(line) <= 60 else line[:57] + "..."
            out.errors.append(InputError(f"{source}, line {lineno}: {shown!r} is not a record id (expected digits)"))
            continue
        if recid in out.lines:
            out.warnings.append(f"{source}, line {lineno}: recid {recid} repeats line {out.lines[recid]}; ignored")
            continue
        out.lines[recid] = lineno
        out.recids.append(recid)
    return out


def read_recids(path: str | Path) -> RecidList:
    """Read and parse a recid list file; an unreadable file is an ``InputError``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"recid list {p} does not exist") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"recid list {p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"cannot read recid list {p}: {exc.strerror}") from exc
    return parse_recids(text, source=str(p))


def _recid_of(token: str) -> str | None:
    if _RECID.fullmatch(token):
        value = int(token)
        return str(value) if value > 0 else None
    m = _RECORD_URL.fullmatch(token)
    if m:
        value = int(m.group(1))
        return str(value) if value > 0 else None
    return None
