"""notebooks/yolov2_colab.ipynb, executed top to bottom on the embedded demo with 2 epochs (what CI runs): any
cell error fails, and so does a missing image (each image cell raises when its file was not written)."""

import json
import os

import pytest
from conftest import ROOT

nbformat = pytest.importorskip("nbformat", reason="requirements-dev.txt")
nbclient = pytest.importorskip("nbclient", reason="requirements-dev.txt")
pytest.importorskip("onnxruntime", reason="requirements-deploy.txt")

NOTEBOOK = os.path.join(ROOT, "notebooks", "yolov2_colab.ipynb")


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert [cell.metadata.get("tags") for cell in code].count(["parameters"]) == 1


@pytest.mark.slow
def test_notebook_trains_evaluates_and_exports_the_demo(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(k for k, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    overrides = (
        f"EPOCHS = 2\nDEMO_IMAGES = 48\nRUNS_DIR = {str(tmp_path / 'runs')!r}\n"  # papermill's injected-parameters cell
    )
    notebook.cells.insert(parameters + 1, nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected"]}))
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": ROOT}})  # fmt: skip
    try:
        client.execute()  # a cell error raises CellExecutionError with the cell's traceback
    finally:
        nbformat.write(notebook, str(tmp_path / "executed.ipynb"))
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    images = [output for output in outputs if {"image/png", "image/jpeg"} & set(output.get("data", {}))]
    assert len(images) >= 3  # training curves, predictions, the PR curve
    run_dir = tmp_path / "runs" / "notebook"
    for name in ("best.weights.h5", "best_int8.tflite", "best_int8.tflite.json", "best.onnx", "best.onnx.json"):
        assert (run_dir / name).exists(), name
    int8_map = json.loads((run_dir / "evaluation_int8" / "results.json").read_text())["map"]
    float_map = json.loads((run_dir / "evaluation" / "results.json").read_text())["map"]
    steps = notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]
    print(f"notebook steps (s): {steps}; mAP float {float_map:.4f}, int8 {int8_map:.4f}")
