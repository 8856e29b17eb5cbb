"""`ferry upload`: not built yet (see the open issues)."""

from __future__ import annotations

import argparse
import sys

from ferry.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("upload", parents=[common], help="(not built yet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    print("ferry upload: not built yet", file=sys.stderr)
    return 2
