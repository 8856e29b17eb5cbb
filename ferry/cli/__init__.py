"""The command line: the only composition root (flags -> config -> a run -> exit code)."""

from ferry.cli.app import COMMANDS, build_parser, chosen_command, main

__all__ = ["COMMANDS", "build_parser", "chosen_command", "main"]
