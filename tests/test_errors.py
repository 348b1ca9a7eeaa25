"""Every user error is one message and exit code 2: bad configs and bad flags, generated from a valid
config one change at a time, through main.py (in process; a few in a fresh process, whose stderr must
hold no traceback)."""

import copy
import json
import math

import pytest

import main as cli
from errors import UserError

# (section, key) -> values that must each be refused
BAD_VALUES = {
    ("model", "backend"): [3, "", "Fancy Yolo", None],
    ("model", "input_size"): [100, 0, -32, 32.0, "416", [416], [416, 400], True],
    ("model", "anchors"): [3, [], [1, 2, 3], [1, -2], ["a", "b"], [1, math.inf]],
    ("model", "labels"): ["dog", [], ["a", "a"], [1, 2], [""]],
    ("model", "max_box_per_image"): [0, 2.5, "10"],
    ("model", "freeze_backend"): ["yes", -1, [1, 2], ["conv_99"]],
    ("model", "backend_options"): [[], "alpha", {"alpha": 0.25, "depth": 3}],
    ("model", "input_channels"): [2, 4],
    ("model", "head_layers"): [-1, 1.5],
    ("model", "head_filters"): [0, 2.5],
    ("model", "backend_weights"): [3],
    ("train", "batch_size"): [0, -4, 1.5, "16", True],
    ("train", "nb_epochs"): [0, 2.5, None],
    ("train", "learning_rate"): [0, -1e-3, math.nan, math.inf, "fast"],
    ("train", "train_times"): [0, 1.5],
    ("train", "object_scale"): [-1, "5"],
    ("train", "ignore_threshold"): [1.5, -0.1],
    ("train", "jitter"): [5, -0.1],
    ("train", "saturation"): [0.5],
    ("train", "flip"): ["yes", 1],
    ("train", "optimizer"): ["rmsprop"],
    ("train", "lr_schedule"): ["linear"],
    ("train", "workers"): [0],
    ("train", "warmup_epochs"): [-1, "3"],
    ("train", "train_annot_folder"): ["/nonexistent/annotations"],
    ("train", "pretrained_weights"): ["/nonexistent/det.weights.h5"],
    ("valid", "score_threshold"): [2, -1],
    ("valid", "nms_threshold"): [1.5],
    ("valid", "max_detections"): [0],
    ("valid", "map_every"): [-1, 0.5],
}

BAD_FLAGS = [
    ["--epochs", "0"],
    ["--epochs", "two"],
    ["--batch_size", "-1"],
    ["--learning_rate", "-0.1"],
    ["--input_size", "100"],
    ["--backend", "Fancy Yolo"],
    ["--optimizer", "rmsprop"],
    ["--workers", "0"],
    ["--no_such_flag"],
    ["--score_threshold", "3"],
    ["--nms_threshold", "-1"],
    ["launch"],
    ["train", "extra"],
    ["--resume", "/nonexistent/run"],
    ["predict", "-w", "{weights}"],
    ["evaluate", "--detections", "{text}"],
    ["evaluate", "--detections", "{text}", "--annotations", "/nonexistent"],
    ["weights", "fetch", "x"],
    ["weights", "download", "no-such-weights"],
    ["convert", "--cfg", "/nonexistent.cfg"],
    ["anchors", "-n", "500"],
]


def config_cases():
    for (section, key), values in BAD_VALUES.items():
        for value in values:
            yield pytest.param(section, key, value, id=f"{section}.{key}={value!r}")


def expect_user_error(argv, capsys):
    """main.py must stop with exit code 2 and an 'Error:' message, or argparse's usage error."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    assert "Error:" in err or "error:" in err  # ours, or argparse's
    return err


@pytest.mark.parametrize("section, key, value", config_cases())
def test_bad_config_value_exits_2_naming_the_key(tmp_path, capsys, demo_like_config, section, key, value):
    _, config = demo_like_config(tmp_path)
    bad = copy.deepcopy(config)
    bad[section][key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    err = expect_user_error(["--config", str(path), "--verbose", "0"], capsys)
    named = f"{section}.{key}" in err or key in err or str(value) in err
    assert named, err


def test_a_label_with_no_annotations_exits_2(tmp_path, capsys, demo_like_config):
    _, config = demo_like_config(tmp_path)
    config["model"]["labels"] = ["ellipse", "dog"]
    (tmp_path / "dog.json").write_text(json.dumps(config))
    err = expect_user_error(["--config", str(tmp_path / "dog.json")], capsys)
    assert "no annotations for model.labels ['dog']" in err and "dog 0" in err and "rectangle, triangle" in err


@pytest.mark.parametrize(
    "content",
    [b'{"model": {"backend": "Full Yolo",}}', b"[1, 2]", b"null", b'{"model": []}', b"\xff\xfe\x00{",
     b'{"model": ' * 100_000],
    ids=["syntax", "array", "null", "section-not-object", "not-utf8", "nested-too-deep"],
)  # fmt: skip
def test_unreadable_config_file_exits_2(tmp_path, capsys, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    err = expect_user_error(["--config", str(path)], capsys)
    assert str(path) in err


def test_a_config_with_a_byte_order_mark_is_read(tmp_path, demo_like_config):
    from config import load_config

    path, _ = demo_like_config(tmp_path)
    with open(path, "rb") as f:
        data = f.read()
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + data)
    assert load_config(str(tmp_path / "bom.json"))["model"]["backend"] == "MobileNet"


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=[" ".join(f) for f in BAD_FLAGS])
def test_bad_flag_exits_2(tmp_path, capsys, demo_like_config, flags):
    path, _ = demo_like_config(tmp_path)
    (tmp_path / "text.txt").write_text("not weights, not detections")
    flags = [f.format(weights=tmp_path / "text.txt", text=tmp_path / "text.txt") for f in flags]
    expect_user_error(["--config", path, *flags], capsys)


@pytest.mark.parametrize("kind", ["text", "empty", "folder", "truncated"])
def test_a_weights_path_that_is_no_weights_file_exits_2(tmp_path, capsys, demo_like_config, kind):
    path, _ = demo_like_config(tmp_path)
    weights = tmp_path / f"w_{kind}.h5"
    if kind == "folder":
        weights.mkdir()
    else:
        weights.write_bytes({"text": b"hello", "empty": b"", "truncated": b"\x89HDF\r\n\x1a\n" + b"\0" * 40}[kind])
    err = expect_user_error(["predict", "--config", path, "-w", str(weights), "-i", str(tmp_path)], capsys)
    assert str(weights) in err


def test_a_truncated_resume_file_exits_2(tmp_path, capsys, demo_like_config):
    path, config = demo_like_config(tmp_path)
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "resume.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    err = expect_user_error(["--resume", str(run)], capsys)
    assert "resume.h5 is not a resume file (not readable HDF5" in err


def test_user_errors_share_one_base_class():
    import anchors
    import backends
    import config
    import darknet
    import datasets
    import detections
    import downloads
    import evaluate
    import images
    import predict
    import training
    import weight_files

    classes = [config.ConfigError, datasets.DatasetError, backends.BackendError, weight_files.WeightsError,
               evaluate.EvaluationError, detections.DetectionsFileError, predict.PredictionError,
               training.TrainingError, darknet.DarknetError, downloads.DownloadError, anchors.AnchorsError,
               images.ImageError]  # fmt: skip
    assert all(issubclass(c, UserError) and c.exit_code == 2 for c in classes)


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit", [("model", "backend", 7), ("model", "freeze_backend", ["conv_99"]), ("train", "batch_size", 1.5)]
)
def test_in_a_fresh_process_stderr_has_the_message_and_no_traceback(tmp_path, demo_like_config, run_cli, edit):
    _, config = demo_like_config(tmp_path)
    section, key, value = edit
    config[section][key] = value
    (tmp_path / "bad.json").write_text(json.dumps(config))
    done = run_cli(["--config", str(tmp_path / "bad.json"), "--verbose", "0"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Error: " in done.stderr and key in done.stderr
