"""Logging set-up: level and optional file from the CLI, and a filter that masks secrets."""

from __future__ import annotations

import logging
import sys

_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Any log line containing ``value`` will show ``***`` instead."""
    if value:
        _SECRETS.add(value)


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            for secret in _SECRETS:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


def setup_logging(level: str = "WARNING", log_file: str | None = None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if log_file else level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()  # a --log-file of an earlier in-process run stays open otherwise
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level.upper())
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(RedactFilter())
    root.addHandler(console)
    if log_file:
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.addFilter(RedactFilter())
        root.addHandler(fh)
