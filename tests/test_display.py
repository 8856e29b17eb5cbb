"""The run display says what is happening: real transfers counted as active, upload
progress for `ferry upload`, current and average rates, a final line per stage, and the
rclone-style flags (-P, -q, -v, --progress-interval, --log-level in any case, --log-format
json). Real runs against the sandbox servers; the terminal bar is checked in tmux."""

from __future__ import annotations

import functools
import io
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ferry.cli.app import main
from ferry.progress import BulkProgress, Flow, Progress
from tests.bulk_support import SyntheticSource, synthetic_source, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source() -> Iterator[SyntheticSource]:
    # Records 0 and 9 have 22-24 tiny files (fetched in small-file batches), the others 1-6.
    with synthetic_source() as src:
        yield src


# --- the counters ----------------------------------------------------------------------


def test_a_batch_of_small_files_is_one_transfer() -> None:
    flow = Flow("download")
    flow.batch([f"1/f{i}" for i in range(16)])
    flow.batch([f"2/f{i}" for i in range(16)])
    assert flow.transfers == 2
    assert "2 active (2 batches of 32 files)" in flow.active_text()
    for i in range(16):
        flow.finished(f"1/f{i}", ok=True)
    assert flow.transfers == 1
    flow.started("2/f3")  # a batch file retried on its own: its own transfer, out of the batch
    assert flow.transfers == 2 and "1 file, 1 batch of 15 files" in flow.active_text()
    flow.finished("2/f3", ok=True)
    for i in (i for i in range(16) if i != 3):
        flow.finished(f"2/f{i}", ok=True)
    assert flow.transfers == 0 and flow.files_done == 32


def test_current_rate_is_over_the_window_and_the_average_is_over_the_run() -> None:
    flow = Flow("up")
    flow.first_s, flow.last_s = 0.0, 30.0
    flow.bytes_moved = 0
    flow.sample(0.0)
    flow.bytes_moved = 3_000_000
    flow.sample(20.0)
    flow.sample(30.0)  # nothing moved in the last 10 s
    assert flow.current_rate(30.0) == 0.0
    assert flow.average_rate() == pytest.approx(100_000.0)
    assert "average 100.0 kB/s" in flow.final() and "3.0 MB transferred in 30.0 s" in flow.final()


async def test_tty_bar_and_final_lines() -> None:
    out = io.StringIO()
    progress = BulkProgress(stream=out, tty=True, label="upload")
    async with progress:
        progress.add_records(1)
        progress.add_totals(files=2, bytes=2000)
        progress.file_started("1/a")
        progress.advance(1000)
        progress.file_finished("1/a", ok=True)
        progress.file_finished("1/b", ok=True, skipped_bytes=1000)
        progress.upload_totals(files=2, bytes=2000)
        progress.upload_started("a")
        assert progress.line().endswith("| up 1 active: a")
        progress.draw()
        progress.upload_advance(2000)
        progress.upload_finished("a", ok=True)
        progress.upload_finished("b", ok=False)
        progress.record_done(ok=False)
    text = out.getvalue()
    assert "\r\x1b[2K[" in text and "upload: records 0/1 | down 2/2 files" in text
    tail = text.rsplit("\n", 4)[-4:]
    assert tail[0].startswith("down: 2 file(s) (1 moved, 1 already there), 1.0 kB transferred"), tail
    assert tail[1].startswith("up: 2 file(s) (1 moved, 1 failed), 2.0 kB transferred"), tail
    assert tail[2] == "records: 1 of 1 done, 1 failed" and tail[3] == ""


async def test_quiet_draws_nothing() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, mode="quiet")
    async with progress:
        progress.add_totals(records=1, files=1, bytes=10)
        progress.draw()
    assert out.getvalue() == ""


# --- real runs -------------------------------------------------------------------------


class Watched(BulkProgress):
    """Records the most transfers shown as active at once, at every change."""

    peak_down = 0
    peak_up = 0
    batches = 0

    def _check(self) -> None:
        Watched.peak_down = max(Watched.peak_down, self.down.transfers)
        Watched.peak_up = max(Watched.peak_up, self.up.transfers)

    def file_started(self, name: str) -> None:
        super().file_started(name)
        self._check()

    def batch_started(self, names: Sequence[str]) -> None:
        super().batch_started(names)
        Watched.batches += 1
        self._check()

    def upload_started(self, name: str) -> None:
        super().upload_started(name)
        self._check()


class WatchedDownload(Watched):
    def __init__(self, **kwargs: Any) -> None:
        Progress.__init__(self, **kwargs)  # records counted by the downloader, as `ferry download` does


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> type[Watched]:
    Watched.peak_down = Watched.peak_up = Watched.batches = 0
    monkeypatch.setattr("ferry.cli.commands.download.Progress", WatchedDownload)
    monkeypatch.setattr("ferry.cli.commands.upload.BulkProgress", Watched)
    return Watched


def _config(tmp_path: Path, source: SyntheticSource) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(f'[source.cernopendata]\nportal = "{source.portal_url}"\n')
    return path


def test_download_with_two_jobs_never_shows_more_than_two_active(
    tmp_path: Path, source: SyntheticSource, watched: type[Watched], capsys: pytest.CaptureFixture[str]
) -> None:
    recids = source.recids[:10]
    args = ["--config", str(_config(tmp_path, source)), "download", *recids, "--dest", str(tmp_path / "d")]
    code = main([*args, "--jobs", "2", "--progress-interval", "0.05"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert watched.batches >= 2  # the 22-file records went as batches
    assert 1 <= watched.peak_down <= 2
    shown = [int(n) for n in re.findall(r"(\d+) active", err)]
    assert all(n <= 2 for n in shown), shown
    files = sum(len(source.record(r)["files"]) for r in recids)
    assert re.search(rf"^download: {files} file\(s\) \({files} moved\), .* average .*/s$", err, re.M), err


def test_quiet_prints_nothing_and_json_logs_are_json(
    tmp_path: Path, source: SyntheticSource, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(_config(tmp_path, source)), "download", source.recids[1], "--dest", str(tmp_path / "d")]
    assert main([*base, "-q"]) == 0
    assert capsys.readouterr().err == ""
    # A re-run, logged at info (any case) as JSON, and nothing but JSON on stderr.
    assert main([*base, "-q", "--log-level", "info", "--log-format", "json"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines, "info logging said nothing"
    parsed = [json.loads(line) for line in lines]
    assert {p["level"] for p in parsed} <= {"INFO", "WARNING", "ERROR"} and all(p["message"] for p in parsed)


def test_verbose_flags_set_the_log_level(
    tmp_path: Path, source: SyntheticSource, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(_config(tmp_path, source)), "download", source.recids[1], "--dest", str(tmp_path / "d")]
    assert main([*base, "-vv", "-q"]) == 0  # -q hides progress; -vv still logs at DEBUG
    assert "DEBUG " in capsys.readouterr().err
    assert main([*base, "--log-level", "Warning"]) == 0
    assert "DEBUG " not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--log-level", "chatty"])
    assert "choose from DEBUG, INFO, WARNING, ERROR" in capsys.readouterr().err


def test_upload_shows_upload_progress_and_a_final_line_per_stage(
    tmp_path: Path,
    source: SyntheticSource,
    repository_factory: Any,
    watched: type[Watched],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    config = write_config(tmp_path, source, repo)
    recid = source.recids[1]
    files = len(source.record(recid)["files"])
    args = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(tmp_path / "d")]
    code = main([*args, "--progress-interval", "0.05"])
    err = capsys.readouterr().err
    assert code == 0, err
    size = source.size(recid)
    assert re.search(rf"^down: {files} file\(s\) \({files} moved\)", err, re.M), err
    assert re.search(rf"^up: {files} file\(s\) \({files} moved\), [0-9.]+ [kM]B transferred", err, re.M), err
    assert "records: 1 of 1 done" in err
    assert watched.peak_up >= 1
    sent = re.search(r"^up: .*?, ([0-9.]+) (kB|MB) transferred", err, re.M)
    assert sent is not None
    assert float(sent.group(1)) * {"kB": 1e3, "MB": 1e6}[sent.group(2)] == pytest.approx(size, rel=0.01)


def test_upload_never_shows_more_active_than_the_upload_limit(
    tmp_path: Path,
    source: SyntheticSource,
    repository_factory: Any,
    watched: type[Watched],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = repository_factory(rate_per_minute=100_000, rate_per_hour=1_000_000)
    # Record 0 has 22+ files; no zipping, so each goes as its own upload.
    config = write_config(tmp_path, source, repo, limits={"zip_threshold": 1000, "zip_small_median_bytes": 0})
    recid = source.recids[0]
    args = ["--config", str(config), "upload", recid, "--target", "sandbox", "--dest", str(tmp_path / "d")]
    assert main([*args, "--uploads", "2", "-q"]) == 0, capsys.readouterr().err
    assert 1 <= watched.peak_up <= 2


# --- a real terminal ---------------------------------------------------------------------


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux missing: make system-deps installs it")
def test_the_bar_on_a_real_terminal(tmp_path: Path, source: SyntheticSource) -> None:
    config = _config(tmp_path, source)
    done = tmp_path / "done"
    ferry = f"{sys.executable} -m ferry.cli"
    command = (
        f"cd {ROOT} && {ferry} --config {config} download {' '.join(source.recids[:8])} --dest {tmp_path / 'd'} "
        f"--jobs 2; echo exit=$? > {done}; sleep 30"
    )
    session = f"ferry-test-{time.monotonic_ns()}"
    _tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "20", command)
    try:
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        screen = _tmux("capture-pane", "-p", "-t", session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert done.read_text().strip() == "exit=0", screen
    assert re.search(r"\[#{20}\] 100\.0% download: records 8/8", screen), screen
    assert re.search(r"^download: \d+ file\(s\) \(\d+ moved\), .* average", screen, re.M), screen
    assert "records: 8 of 8 done" in screen


def test_progress_display_options_follow_the_flags() -> None:
    from argparse import Namespace

    from ferry.progress import display_options

    assert display_options(Namespace()) == {"mode": "auto", "interval": 10.0}
    assert display_options(Namespace(quiet=True, progress=True))["mode"] == "quiet"
    assert display_options(Namespace(progress=True, progress_interval=2.5)) == {"mode": "bar", "interval": 2.5}
    bar = Progress(stream=io.StringIO(), **display_options(Namespace(progress=True)))
    assert bar.tty  # -P: the bar even on a pipe
    lines = functools.partial(Progress, stream=io.StringIO(), tty=False)()
    assert not lines.tty and lines.interval == 10.0
