"""``python -m metadata.mapping``: write metadata/MAPPING.md; ``--check``: exit 1 when it is stale."""

from __future__ import annotations

import sys

from metadata.mapping.render import DOCUMENT, render


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
        if current != text:
            print(f"{DOCUMENT} differs from the mapping tables: run python -m metadata.mapping", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
