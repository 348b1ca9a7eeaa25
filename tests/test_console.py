"""The console: native TensorFlow start-up lines stay off the terminal (YOLO_NATIVE_LOGS=1 brings them back),
Python's own messages stay on it; an expected missing backend file is a note, a missing named file a warning."""

import os
import re
import signal
import subprocess
import sys
import warnings

import pytest
from conftest import ENV, ROOT

from errors import UserError

NATIVE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d|WARNING: All log messages before absl)")


def export_missing(env):
    return subprocess.run([sys.executable, "main.py", "export", "-w", "nothing.weights.h5", "-c", "configs/demo.json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_native_lines_go_to_a_log_and_python_errors_stay(tmp_path):
    own_temp = {**ENV, "TMPDIR": str(tmp_path)}  # the log lives in the temp folder, where other runs write theirs
    quiet = export_missing({k: v for k, v in own_temp.items() if k != "YOLO_NATIVE_LOGS"})
    assert quiet.returncode == 2
    assert [line for line in quiet.stderr.splitlines() if line.strip()] == [
        "Error: Detector weights file not found: nothing.weights.h5"
    ]
    loud = export_missing({**own_temp, "YOLO_NATIVE_LOGS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "Error: Detector weights file not found" in loud.stderr
    native = [line for line in loud.stderr.splitlines() if NATIVE.match(line)]
    if native:  # what this machine's TensorFlow prints at start-up went to the log file in the quiet run
        log = (tmp_path / "yolov2-native.log").read_text()
        assert log.strip() and NATIVE.search(log.splitlines()[0])


def test_a_missing_default_backend_file_is_a_note_and_a_named_one_an_error(tmp_path, capsys):
    from frontend import YOLO

    if os.path.exists(os.path.join(ROOT, "weights", "mobilenet_backend.h5")):
        pytest.skip("weights/mobilenet_backend.h5 is present: the default file is not missing")
    args = dict(backend="MobileNet", input_size=96, labels=["a"], max_box_per_image=2, anchors=[1.0, 1.0],
                backend_options={"alpha": 0.25}, freeze_backend=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        YOLO(**args, backend_weights="")  # weights/mobilenet_backend.h5 is absent here, as in the demo
    assert "Note: MobileNet: no backend weights at" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"model.backend_weights: .*named.h5 not found"):
        YOLO(**args, backend_weights=str(tmp_path / "named.h5"))


def test_all_detections_below_the_threshold_are_named():
    import numpy as np

    from evaluate import evaluate_detections, format_table

    instances = [{"object": [{"name": "a", "difficult": False, "xmin": 1, "ymin": 1, "xmax": 10, "ymax": 10}]}]
    detections = [(np.array([[0, 0, 10, 10]], float), np.array([0.12]), np.array([0]))]
    table = format_table(evaluate_detections(instances, detections, ["a"], "voc", 0.3))
    assert "Note: no detection scores 0.3 or more (the highest scores 0.1200)" in table


@pytest.mark.slow
def test_predict_with_nothing_above_the_threshold_names_the_highest_score(tmp_path, capsys):
    import keras
    from conftest import SHAPES_JPG

    from frontend import YOLO
    from predict import run_prediction

    keras.utils.set_random_seed(0)  # an untrained head: scores near 0.5
    yolo = YOLO("MobileNet", 96, ["a"], 2, [1.0, 1.0], backend_options={"alpha": 0.25}, load_pretrained=False)
    records = run_prediction(yolo, SHAPES_JPG, str(tmp_path), {"score_threshold": 0.999, "nms_threshold": 0.45,
                                                               "max_detections": 10})  # fmt: skip
    out = capsys.readouterr().out
    assert records == [] and "No detection scores 0.999 or more; the highest on the first 1 images scores 0." in out


def test_a_warm_up_longer_than_half_the_run_is_announced(capsys):
    """darknet's 12,800-image warm-up on 131 training images and 30 epochs: the whole run (3,930 images)."""
    from training import note_warmup

    note_warmup(12800, {"nb_epochs": 30, "train_times": 1}, 131)
    assert "covers 100% of this run's 3,930 training images shown" in capsys.readouterr().out
    note_warmup(12800, {"nb_epochs": 50, "train_times": 1}, 5717)  # VOC2012 train: 0.04% of the run
    assert capsys.readouterr().out == ""


def wait_for(event, proc, what):
    """Polls `event()` until it holds; a process that ends first fails the test with its stderr. No deadline of its
    own: a run that never gets there is a hang, which the suite's per-test timeout names."""
    import time

    while not event():
        if proc.poll() is not None:
            pytest.fail(f"main.py exited with {proc.returncode} before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)


def tensorflow_loaded(pid):
    """True once TensorFlow's shared library is mapped into the process: its import is under way or done, and
    the data, the model and the first batch are still to come."""
    with open(f"/proc/{pid}/maps") as f:
        return "libtensorflow" in f.read()


def epochs_logged(run_dir):
    from runs import read_history

    return len(read_history(str(run_dir / "history.csv")))  # [] until the file exists


@pytest.mark.parametrize(
    "moment, signum",
    [
        ("importing", signal.SIGINT),
        pytest.param("training", signal.SIGINT, marks=pytest.mark.slow),
        pytest.param("training", signal.SIGTERM, marks=pytest.mark.slow),
    ],
)
def test_ctrl_c_at_any_moment_is_a_message_not_a_traceback(tmp_path, demo_like_config, moment, signum):
    """Ctrl-C (or SIGTERM) while TensorFlow is imported or the data is read (before training), or during training
    (once an epoch is logged, with 49 to go). The signal waits for that moment, however fast the machine is."""
    path, _ = demo_like_config(tmp_path, nb_epochs=50)
    proc = subprocess.Popen([sys.executable, "main.py", "--config", path, "--verbose", "0"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        if moment == "importing":
            wait_for(lambda: tensorflow_loaded(proc.pid), proc, "TensorFlow was loaded")
        else:
            wait_for(lambda: epochs_logged(tmp_path / "runs" / "t") >= 1, proc, "an epoch was logged")
        proc.send_signal(signum)
        _, err = proc.communicate()
    finally:
        proc.kill()  # a failed wait leaves no training process behind
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err, err[-2000:]
    if moment == "training":
        assert 1 <= epochs_logged(tmp_path / "runs" / "t") < 50  # it stopped mid-run
