"""`ferry config show`: the configuration a command would run with, files merged, secrets masked."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from typing import Any

from ferry.core.config import Config, read_config_files, user_config_path

EPILOG = """\
examples:
  ferry config show
  ferry --config ferry.toml config show

merge order (each over the one before; tables merge key by key, a value replaces):
  1. $XDG_CONFIG_HOME/ferry/ferry.toml (default ~/.config/ferry/ferry.toml)
  2. --config PATH, else $FERRY_CONFIG, else ./ferry.toml
then command-line flags (e.g. --jobs, --retries) for that one run.
secrets (keys named token, password, secret, key...) show as ***; token_file and token_env
are where a token is read from, not the token, and are shown.
"""

# A key holding a secret value, not a reference to one (token_file / token_env name where
# the token lives and are worth seeing).
SECRET_KEY = re.compile(r"(token|password|secret|passwd|credential|api_?key|access_?key)$", re.I)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "config",
        parents=[common],
        help="show the merged configuration (secrets masked)",
        description="Print the configuration ferry reads: the user config below the project config, merged.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", parents=[common], help="print the merged config as TOML, secrets masked")
    show.set_defaults(func=run)


def masked(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out[key] = masked(value)
        elif SECRET_KEY.search(str(key)) and not str(key).endswith(("_file", "_env")):
            out[key] = "***"
        else:
            out[key] = value
    return out


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            body = to_toml(value, f"{name}.")
            if any(not isinstance(v, Mapping) for v in value.values()) or not value:
                lines += ["", f"[{name}]"]
            lines += body
    return lines


def run(args: argparse.Namespace, config: Config) -> int:
    data, paths = read_config_files(args.config)
    print(f"# user config: {user_config_path()}" + ("" if user_config_path() in paths else " (absent)"))
    print("# files read, lowest first: " + (", ".join(str(p) for p in paths) or "none (defaults only)"))
    print("\n".join(to_toml(masked(data))).strip("\n"))
    return 0
