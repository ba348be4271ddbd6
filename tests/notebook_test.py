"""notebooks/quickstart.ipynb runs top to bottom and shows a metrics table and an image grid."""

import pathlib

import nbclient
import nbformat

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_runs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(
    notebook,
    timeout=300,
    kernel_name="python3",
    resources={"metadata": {"path": str(NOTEBOOK.parent)}},
  ).execute()
  outputs = [
    output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
  ]
  assert not [output for output in outputs if output.output_type == "error"]
  tables = [
    output.data["text/markdown"] for output in outputs if "text/markdown" in output.get("data", {})
  ]
  assert tables and "| laplacian_pyramid |" in tables[0]
  assert any("image/png" in output.get("data", {}) for output in outputs)
