"""The ``ferry`` command line: parses flags, loads config, runs one command, maps errors.

Each command lives in ``ferry/cli/commands/<name>.py`` with ``register(subparsers)``; the
command's function returns an exit code. Only this module turns ``FerryError`` into a
message and an exit code: 0 all verified, 1 some records/files failed, 2 bad usage,
config or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from ferry import __version__
from ferry.cli.memory import one_malloc_arena
from ferry.core.config import load_config
from ferry.core.errors import FerryError, InputError
from ferry.core.logs import mask_secrets, masked_streams, setup_logging

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

COMMANDS = (
    "download",
    "upload",
    "bulk",
    "cache",
    "zip",
    "sandbox",
    "demo",
    "stats",
    "manifest",
    "verify",
    "archive",
    "push",
    "mirror",
    "copy",
    "config",
    "completion",
)

log = logging.getLogger("ferry")


# Common flags that take a value: needed to find the command name in argv without argparse.
_VALUE_FLAGS = frozenset({"--config", "--log-level", "--log-file", "--log-format", "--progress-interval", "--retries"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(text: str) -> str:
    """``--log-level`` in any case (``debug``, ``Info``), as other tools accept it."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(LOG_LEVELS)} (any case)")
    return level


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (as limits.retries)")
    return value


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (``None`` for ``--help``, ``--version``, typos)."""
    it = iter(argv)
    for token in it:
        if token in _VALUE_FLAGS:
            next(it, None)
        elif token in ("--", "-h", "--help", "--version"):
            break  # the top-level help or version: every command must be known
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) the parser of one command.

    Every command module imports what its command needs (aiohttp, the XRootD bindings,
    pandas, the sandbox servers); importing all of them costs ~0.4 s, more than a small
    download takes. A run that names its command imports only that one; ``--help`` and
    unknown commands still see them all.
    """
    # The common flags work before or after the command name. Their defaults are suppressed
    # so a sub-parser never overwrites a value given before the command with its default.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file, read over ~/.config/ferry/ferry.toml (default ./ferry.toml or $FERRY_CONFIG)",
    )
    common.add_argument("--log-level", type=_log_level, metavar="LEVEL", help="DEBUG, INFO, WARNING (default), ERROR")
    common.add_argument("--log-file", metavar="PATH", help="also write a detailed log to PATH")
    common.add_argument("--log-format", choices=("text", "json"), help="text (default) or json: one object a line")
    # As in rclone: -v/-vv raise the log level, -q shows errors only, -P forces the live display.
    common.add_argument("-v", "--verbose", action="count", help="log more: -v INFO, -vv DEBUG")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress, errors only")
    common.add_argument("-P", "--progress", action="store_true", help="live progress bar even when not a terminal")
    common.add_argument(
        "--progress-interval",
        type=_seconds,
        metavar="SECONDS",
        help="when stderr is not a terminal: a progress line every SECONDS (default 10)",
    )
    common.add_argument(
        "--retries",
        type=_retries,
        metavar="N",
        help="repeat a failed request or file up to N times after the first try, this run only (default 4)",
    )
    parser = argparse.ArgumentParser(
        prog="ferry",
        description=(
            "dataferry moves dataset records (CERN Open Data -> InvenioRDM/NRP, Zenodo, S3) "
            "and verifies every byte: source checksum on arrival, target checksum after upload."
        ),
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"dataferry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in (only,) if only else COMMANDS:
        module = importlib.import_module(f"ferry.cli.commands.{name}")
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    one_malloc_arena()  # before the command's imports start any thread (see ferry/cli/memory.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=chosen_command(argv))
    args = parser.parse_args(argv)
    # Defaults of the common flags are filled here, not by argparse: sub-parsers share the
    # flag objects, and a default set on one would overwrite a value given to another.
    defaults = {
        "config": None,
        "log_level": None,
        "log_file": None,
        "log_format": "text",
        "verbose": 0,
        "quiet": False,
        "progress": False,
        "progress_interval": None,
        "retries": None,
    }
    for name, default in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.log_level is None:  # an explicit --log-level wins over -v/-q; -v over -q (which also hides progress)
        verbose = min(args.verbose or 0, 2)
        args.log_level = ("INFO", "DEBUG")[verbose - 1] if verbose else ("ERROR" if args.quiet else "WARNING")
    with masked_streams(), sigterm_as_interrupt():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        setup_logging(args.log_level, args.log_file, fmt=args.log_format)
    except OSError as exc:
        print(f"ferry: error: cannot write the log file {args.log_file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config)
        if args.retries is not None:  # a one-off run's flag wins over every config file
            config = dataclasses.replace(config, limits=dataclasses.replace(config.limits, retries=args.retries))
        read = ", ".join(str(p) for p in config.paths) or "none (defaults)"
        log.info("dataferry %s: ferry %s; config files: %s", __version__, args.command, read)
        log.debug("limits: %s", config.limits)
        code: int = args.func(args, config)
        return code
    except KeyboardInterrupt:
        print("ferry: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ferry ... | head`): stop quietly, as other tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except InputError as exc:
        print(f"ferry: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FerryError as exc:
        print(f"ferry: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.kind == "ConfigError" else EXIT_FAILED
    except OSError as exc:
        # A local fault no layer translated (a path given on the command line that cannot
        # be written, a full disk): say what and where, never a traceback.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"ferry: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO) else EXIT_USAGE
    except sqlite3.Error as exc:
        print(f"ferry: error: the ledger database failed: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM is answered like Ctrl-C (KeyboardInterrupt: cleanup, exit 130), not by dying
    mid-write; commands with their own handling (bulk) install theirs on the event loop."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (an embedding caller): leave it alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
