"""Logging set-up: level and optional file from the CLI, and a filter that masks secrets."""

from __future__ import annotations

import json
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


class JsonFormatter(logging.Formatter):
    """One JSON object a line (time, level, logger, message; exception text if any), for
    log shippers. Runs after ``RedactFilter``, so secrets are already masked."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "WARNING", log_file: str | None = None, *, fmt: str = "text") -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if log_file else level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()  # a --log-file of an earlier in-process run stays open otherwise
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level.upper())
    text = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    console.setFormatter(JsonFormatter() if fmt == "json" else text)
    console.addFilter(RedactFilter())
    root.addHandler(console)
    if log_file:
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.INFO)
        detailed = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        fh.setFormatter(JsonFormatter() if fmt == "json" else detailed)
        fh.addFilter(RedactFilter())
        root.addHandler(fh)
