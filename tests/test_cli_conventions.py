"""CLI conventions: user-level config below the project's, `ferry config show` with secrets
masked, shell completion that a real bash runs, an example in every command's --help."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from ferry.cli.app import COMMANDS, build_parser, main
from ferry.core.config import load_config


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    xdg = tmp_path / "xdg"
    (xdg / "ferry").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("FERRY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return xdg / "ferry" / "ferry.toml"


def test_user_config_is_read_below_the_project_config(homes: Path, tmp_path: Path) -> None:
    homes.write_text(
        '[targets.nrp]\ntype = "invenio"\nurl = "https://user.example"\ntoken_file = "~/nrp.token"\n'
        "[limits]\ndownloads = 3\nuploads = 2\n"
    )
    assert load_config().limits.downloads == 3 and load_config().paths == (homes,)
    (tmp_path / "ferry.toml").write_text('[targets.nrp]\nurl = "https://project.example"\n[limits]\nuploads = 7\n')
    config = load_config()
    assert config.paths == (homes, Path("ferry.toml"))
    # Tables merge key by key: the project's url and uploads, the user's token_file and downloads.
    assert config.target("nrp").url == "https://project.example" and config.target("nrp").token_file == "~/nrp.token"
    assert (config.limits.downloads, config.limits.uploads) == (3, 7)
    other = tmp_path / "other.toml"
    other.write_text("[limits]\ndownloads = 5\n")
    assert load_config(str(other)).limits.downloads == 5  # --config replaces ./ferry.toml, not the user file
    assert load_config(str(other)).limits.uploads == 2


def test_config_show_masks_secrets(homes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    homes.write_text(
        '[targets.s3]\ntype = "s3"\nurl = "https://s3.example"\nsecret_access_key = "SHHH-1"\n'
        'token_env = "S3_TOKEN"\n[targets.nrp]\ntype = "invenio"\nurl = "https://n.example"\ntoken = "SHHH-2"\n'
        'token_file = "/etc/ferry/nrp.token"\n'
    )
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "SHHH" not in out
    assert 'secret_access_key = "***"' in out and 'token = "***"' in out
    assert 'token_file = "/etc/ferry/nrp.token"' in out and 'token_env = "S3_TOKEN"' in out
    assert f"files read, lowest first: {homes}" in out and "[targets.nrp]" in out


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_actions_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        line = " ".join(["ferry", *words])
        probe = (
            f"{script}\nCOMP_WORDS=(ferry {' '.join(words)}); COMP_CWORD={len(words)}; COMP_LINE={line!r}; "
            '_ferry; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert {"download", "upload", "bulk", "stats", "config", "completion"} <= set(complete("")) - {""}
    assert complete("up") == ["upload"]
    assert complete("stats", "re") == ["report"]
    assert "--dry-run" in complete("upload", "--d") and "--progress-interval" in complete("bulk", "--pro")
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef ferry\n")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_in_commands_shows_an_example_in_its_help() -> None:
    commands = _commands()
    assert sorted(commands) == sorted(COMMANDS)
    missing = []
    for name in COMMANDS:
        text = commands[name].format_help()
        if not any(line.strip().startswith(f"ferry {name}") for line in text.splitlines()) or "example" not in text:
            missing.append(name)
    assert missing == [], f"--help without an example (an epilog 'examples:' with a 'ferry NAME ...' line): {missing}"


def test_common_flags_are_listed_in_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for name, parser in _commands().items():
        text = parser.format_help()
        for flag in ("--config", "--log-level", "--log-format", "-q, --quiet", "-P, --progress", "--progress-interval"):
            assert flag in text, (name, flag)
