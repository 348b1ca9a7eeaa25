"""The console: native TensorFlow start-up lines stay off the terminal (YOLO_NATIVE_LOGS=1 brings them back),
Python's own messages stay on it; an expected missing backend file is a note, a missing named file a warning."""

import os
import re
import subprocess
import sys
import tempfile
import warnings

import pytest
from conftest import ENV, ROOT

NATIVE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d|WARNING: All log messages before absl)")


def export_missing(env):
    return subprocess.run([sys.executable, "main.py", "export", "-w", "nothing.weights.h5", "-c", "configs/demo.json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_native_lines_go_to_a_log_and_python_errors_stay():
    quiet = export_missing({k: v for k, v in ENV.items() if k != "YOLO_NATIVE_LOGS"})
    assert quiet.returncode == 2
    assert [line for line in quiet.stderr.splitlines() if line.strip()] == [
        "Error: Detector weights file not found: nothing.weights.h5"
    ]
    loud = export_missing({**ENV, "YOLO_NATIVE_LOGS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "Error: Detector weights file not found" in loud.stderr
    native = [line for line in loud.stderr.splitlines() if NATIVE.match(line)]
    if native:  # what this machine's TensorFlow prints at start-up went to the log file in the quiet run
        log = open(os.path.join(tempfile.gettempdir(), "yolov2-native.log")).read()
        assert log.strip() and NATIVE.search(log.splitlines()[0])


def test_a_missing_default_backend_file_is_a_note_and_a_named_one_a_warning(tmp_path, capsys):
    from frontend import YOLO

    if os.path.exists(os.path.join(ROOT, "weights", "mobilenet_backend.h5")):
        pytest.skip("weights/mobilenet_backend.h5 is present: the default file is not missing")
    args = dict(backend="MobileNet", input_size=96, labels=["a"], max_box_per_image=2, anchors=[1.0, 1.0],
                backend_options={"alpha": 0.25}, freeze_backend=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        YOLO(**args, backend_weights="")  # weights/mobilenet_backend.h5 is absent here, as in the demo
    assert "Note: MobileNet: no backend weights at" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="no backend weights at .*named.h5"):
        YOLO(**args, backend_weights=str(tmp_path / "named.h5"))
