"""The figures of the notebook's time table: runs notebooks/yolov2_colab.ipynb top to bottom in a fresh kernel at
its own default parameters (the demo: 1000 generated images, 50 epochs), run folder in a temporary folder, and
prints the step times the notebook reports in its last cell.

    python scripts/notebook_figures.py

Needs requirements-dev.txt (nbclient) and requirements-deploy.txt (the export cell). On a CPU it takes as long as
the demo's training and more; tests/test_notebook.py runs the same notebook with 48 images and 2 epochs.
"""

import os
import sys
import tempfile
import time

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "yolov2_colab.ipynb")


def main():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(k for k, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    with tempfile.TemporaryDirectory() as folder:
        overrides = f"RUNS_DIR = {os.path.join(folder, 'runs')!r}\n"  # the one parameter changed
        notebook.cells.insert(parameters + 1, nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected"]}))
        start = time.time()
        client = nbclient.NotebookClient(notebook, kernel_name="python3", resources={"metadata": {"path": ROOT}})
        client.execute()
    steps = notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]
    print(f"step seconds: {steps}; whole notebook {time.time() - start:.0f} s on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    sys.exit(main())
