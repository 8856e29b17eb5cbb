"""Logging set-up: level and optional file from the CLI, and a filter that masks secrets."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Any log line containing ``value`` will show ``***`` instead."""
    if value:
        _SECRETS.add(value)


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret shown as ``***`` (ledger, messages, streams)."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg, record.args = mask_secrets(record.getMessage()), None
            if record.exc_info and record.exc_info[1] is not None:
                # The traceback text is formatted from the exception: mask it once, here.
                record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class MaskingStream:
    """A text stream that masks registered secrets in everything written through it: the
    last line of defence for stdout/stderr (messages, progress, warnings, tracebacks)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_secrets(text) if _SECRETS else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def masked_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` masked for the duration (a CLI run)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskingStream(saved[0]), MaskingStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


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
