"""Every notebook in figs/ runs headless top to bottom (papermill, a kernel of this venv)
on the stats of a real `ferry demo` run and on a simulated run with failures in every
stage; the stats directory comes from the papermill parameter or from FERRY_STATS_DIR.
The one-page HTML report of the demo's stats is opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import PIL.Image
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from stats.synth import simulate_run, synthetic_records

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "figs").glob("*.ipynb"))


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stats")
    simulate_run(out, synthetic_records(20))
    return out


@pytest.fixture(scope="module")
def demo_stats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stats of `ferry demo` on three records (a single upload, a bulk, a re-run)."""
    from ferry.cli import main

    workdir = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--workdir", str(workdir), "--recids", "80509", "81045", "81002", "--no-figures"]) == 0
    return workdir / "stats"


@pytest.fixture(scope="module")
def kernel_name() -> str:
    """The venv's own python3 kernel (ipykernel ships its spec into sys.prefix; jupyter
    launches it with this interpreter). Nothing needs installing by hand."""
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:  # pragma: no cover - ipykernel missing from requirements.txt
        pytest.fail("no python3 kernel: pip install -r requirements.txt (ipykernel)")
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    return "python3"


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel imports stats/ and figs/ from this checkout even if it is not installed.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("FERRY_STATS_DIR", raising=False)


def test_the_four_notebooks_exist_with_a_parameters_cell() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["download_analysis", "run_overview", "sankey", "upload_analysis"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "stats_dir = None" in tagged[0].source, path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: clear outputs"


def _run(path: Path, out: Path, kernel: str, **params: object) -> nbformat.NotebookNode:
    papermill.execute_notebook(
        str(path), str(out), parameters=params, kernel_name=kernel, cwd=str(out.parent), progress_bar=False
    )
    return nbformat.read(out, as_version=4)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for cell in nb.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {}))


@pytest.mark.parametrize("name", ["run_overview", "download_analysis", "upload_analysis"])
@pytest.mark.parametrize("which", ["demo", "simulated"])
def test_notebook_runs_with_parameter(
    name: str, which: str, request: pytest.FixtureRequest, kernel_name: str, kernel_env: None, tmp_path: Path
) -> None:
    stats = request.getfixturevalue("demo_stats" if which == "demo" else "stats_dir")
    nb = _run(ROOT / "figs" / f"{name}.ipynb", tmp_path / f"{name}.ipynb", kernel_name, stats_dir=str(stats))
    assert _images(nb) >= 3
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_sankey_notebook_takes_stats_dir_from_the_environment(
    stats_dir: Path, kernel_name: str, kernel_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_STATS_DIR", str(stats_dir))
    nb = _run(ROOT / "figs" / "sankey.ipynb", tmp_path / "sankey.ipynb", kernel_name)
    assert _images(nb) == 1
    plotly = [
        o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    assert len(plotly) == 1
    sankey = plotly[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]
    assert sankey["type"] == "sankey" and "selected: 20" in sankey["node"]["label"]
    assert json.dumps(sankey["link"]["value"])  # the flows are there


def test_notebook_without_stats_says_how_to_give_them(kernel_name: str, kernel_env: None, tmp_path: Path) -> None:
    with pytest.raises(papermill.PapermillExecutionError, match="FERRY_STATS_DIR"):
        _run(ROOT / "figs" / "run_overview.ipynb", tmp_path / "out.ipynb", kernel_name)


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is missing: make system-deps installs the Debian package", pytrace=False)
    return found


def _open_headless(page: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """Screenshot of ``page`` and the console messages Chromium logged while loading it."""
    shot = tmp_path / f"{page.stem}.png"
    done = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return shot, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_console_check_catches_a_script_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>notDefined();</script></body></html>")
    _, console = _open_headless(bad, tmp_path)
    assert any("notDefined" in line for line in console), console


def test_report_of_the_demo_opens_in_a_headless_browser(
    demo_stats: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ferry.cli import main
    from figs.figures import all_figures
    from stats.load import load

    page = tmp_path / "report.html"
    assert main(["stats", "report", str(demo_stats), "-o", str(page)]) == 0
    assert capsys.readouterr().out.strip() == str(page)
    text = page.read_text()
    # The summary and every figure on the one page, nothing fetched from elsewhere.
    assert "records: 3 total, 3 ok" in text
    for name in all_figures(load(demo_stats)):
        assert f'id="{name}"' in text and f'alt="{name}"' in text
    assert text.count("<img alt=") == len(all_figures(load(demo_stats)))
    assert "<script src=" not in text and "<link " not in text  # plotly.js is inline
    shot, console = _open_headless(page, tmp_path)
    assert console == []
    image = PIL.Image.open(shot).convert("L")
    low, high = (int(v) for v in image.getextrema())  # type: ignore[arg-type]
    assert image.size == (1200, 2400) and high - low > 100  # drawn, not a blank page
    assert len(image.resize((60, 120)).getcolors(maxcolors=256 * 256) or []) > 20
