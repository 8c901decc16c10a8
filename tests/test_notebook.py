"""The API in a real notebook: examples/audit_in_a_notebook.ipynb executed by a Jupyter kernel (nbclient), as
a user runs it: figures show as pictures without %matplotlib, the result as a table, and no warning or
training words (epochs) in its output."""

from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")
NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "audit_in_a_notebook.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}}).execute()
    return notebook


def outputs_of(notebook, source_start: str) -> list[dict]:
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    return cell.outputs


@pytest.mark.parametrize("call", ["result.sigma_figure()", "result.survival_figure()"])
def test_figures_show_as_pictures_without_matplotlib_magic(executed, call):
    [shown] = [o for o in outputs_of(executed, call) if o.output_type == "execute_result"]
    assert "image/png" in shown.data and len(shown.data["image/png"]) > 1000


def test_the_result_shows_as_a_table_of_sigma_by_group(executed):
    [shown] = [o for o in outputs_of(executed, "result = robustness_bias.audit") if o.output_type == "execute_result"]
    page = shown.data["text/html"]
    assert page.startswith("<p>AuditResult: 360 images, estimators exact, deepfool") and "more ink" in page


def test_no_warning_and_no_epoch_in_what_the_notebook_prints(executed):
    printed = "".join(o.get("text", "") for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs
                      if o.output_type == "stream")
    assert "Warning" not in printed and "epoch" not in printed.lower()


def test_overall_counts_print_as_whole_numbers(executed):
    [shown] = [o for o in outputs_of(executed, "result.overall") if o.output_type == "execute_result"]
    assert "360.0" not in shown.data["text/plain"] and "360" in shown.data["text/plain"]
