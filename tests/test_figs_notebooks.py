"""Every notebook in figs/ runs headless top to bottom (papermill, a kernel of this venv)
on a simulated run; the stats directory comes from the papermill parameter or from
FERRY_STATS_DIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import papermill
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
def test_notebook_runs_with_parameter(
    name: str, stats_dir: Path, kernel_name: str, kernel_env: None, tmp_path: Path
) -> None:
    nb = _run(ROOT / "figs" / f"{name}.ipynb", tmp_path / f"{name}.ipynb", kernel_name, stats_dir=str(stats_dir))
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
