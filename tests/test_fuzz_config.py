"""A config and flag fuzzer: generated invalid configs and flag sets, each run through main.py in-process; every one
must end with exit code 2 and a one-line "Error: ..." naming the key or flag, never an exception."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT

import main as cli
from config_checks import CHECKS, KINDS, MAXIMA

# Values that break each kind of key; a kind's list holds only values its check must refuse.
BAD_BY_KIND = {
    "a positive whole number": [0, -3, 2.5, "8", None, True, [4]],
    "a whole number (0 turns it off)": [-1, 1.5, "5", None],
    "a whole number of at least 0": [-1, 0.5, "x"],
    'a whole number, or "auto"': [-1, 1.5, "three", None],
    'a positive whole number, or "auto"': [0, -2, 1.5, "many", None, True],
    "a positive number": [0, -0.1, "x", None, float("nan"), float("inf")],
    'a positive number, or "auto"': [0, -1e-3, "fast", float("nan"), float("inf"), None],
    "a number of at least 0": [-1, "x", float("nan")],
    "a number from 0 to 1": [-0.1, 1.5, "x", float("inf")],
    "a number from 0 to below 1": [1.0, -0.5, "x"],
    "a number from 0 to below 0.5 (the share of each side cropped or padded)": [5, 0.5, -0.1],
    "a number of at least 1": [0.5, "x"],
    "true or false": ["yes", 1, None],
    "text or a list of text": [3, [1, 2]],
    "non-empty text": ["", "   ", 7],
    "text (a path or name)": [3, ["a"]],
    "a JSON object": ["alpha=0.25", [1]],
    'devices: "auto", "cpu", GPU numbers "0,1", or a list of them': [1.5, "", [], [0.5], {"gpu": 0}],
    "[smallest, largest]: two multiples of 32, smallest first": [[320], [608, 320], [300, 600], "320"],
}
SPECIAL = [  # (raw config, what the message must name)
    ({"model": {"labels": "dog"}}, "model.labels"),
    ({"model": {"labels": []}}, "model.labels"),
    ({"model": {"labels": ["dog", "dog"]}}, "model.labels"),
    ({"model": {"anchors": 5}}, "model.anchors"),
    ({"model": {"anchors": [1, 2, 3]}}, "model.anchors"),
    ({"model": {"anchors": [1, -2]}}, "model.anchors"),
    ({"model": {"backend": 3}}, "model.backend"),
    ({"model": {"input_size": 100}}, "model.input_size"),
    ({"model": {"input_size": 10**12}}, "model.input_size"),
    ({"model": {"input_size": [416]}}, "model.input_size"),
    ({"model": {"freeze_backend": "yes"}}, "model.freeze_backend"),
    ({"model": {"input_channels": 2}}, "model.input_channels"),
    ({"train": {"run_name": "../outside"}}, "train.run_name"),
    ({"train": {"run_name": "a/b"}}, "train.run_name"),
    ({"train": {"optimizer": "rmsprop"}}, "train.optimizer"),
    ({"train": {"lr_schedule": "linear"}}, "train.lr_schedule"),
    ({"train": {"precision": "float8"}}, "train.precision"),
    ({"train": {"run_eagerly": "yes"}}, "train.run_eagerly"),
    ({"train": {"run_eagerly": 1}}, "train.run_eagerly"),
    ({"train": {"sync_batchnorm": "true"}}, "train.sync_batchnorm"),
    ({"train": {"run_eagerly": True, "jit_compile": True}}, "train.run_eagerly"),
    ({"train": {"warmup_epochs": -1}}, "train.warmup_epochs"),
    ({"modle": {"backend": "Tiny Yolo"}}, "'modle'"),
    ({"train": 5}, "'train'"),
]


def generated_cases():
    cases = []
    for kind, keys in KINDS.items():
        assert kind in BAD_BY_KIND, f"the fuzzer has no bad values for {kind!r}"
        for section, key in keys:
            for bad in BAD_BY_KIND[kind]:
                assert not CHECKS[kind](bad), (kind, bad)
                cases.append(({section: {key: bad}}, f"{section}.{key}"))
    for (section, key), most in MAXIMA.items():
        cases.append(({section: {key: most * 10 if isinstance(most, int) else most * 1.5}}, f"{section}.{key}"))
    return cases + SPECIAL


CASES = generated_cases()


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err.strip(), captured.out


def assert_one_line_error(code, err, named):
    assert code == 2, err
    assert err.startswith("Error: ") and "\n" not in err, err
    assert named in err, err


def test_the_fuzzer_covers_enough_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize("raw, named", CASES, ids=[f"{k}-{i}" for i, (_, k) in enumerate(CASES)])
def test_invalid_config_is_one_line_naming_the_key(raw, named, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))  # NaN and Infinity are written as JSON's extensions, which json.load reads
    code, err, _ = run_main(["--config", str(path)], capsys)
    assert_one_line_error(code, err, named)
    assert str(path) in err


@pytest.mark.parametrize(
    "content, named",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"model": ', "not valid JSON"),
        (b"[1, 2]", "top level must be a JSON object"),
        (b"null", "top level must be a JSON object"),
        (b"", "not valid JSON"),
    ],
)
def test_unreadable_config_files(content, named, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, err, _ = run_main(["--config", str(path)], capsys)
    assert_one_line_error(code, err, named)


@pytest.fixture(scope="module")
def good_config(tmp_path_factory, demo_like_config):
    """A valid config on a tiny dataset, and a folder of files that are not detector weights."""
    folder = tmp_path_factory.mktemp("fuzz")
    path, _ = demo_like_config(folder)
    (folder / "text.h5").write_text("not a weights file")
    (folder / "empty.h5").write_bytes(b"")
    (folder / "folder.h5").mkdir()
    (folder / "existing_file").write_text("x")
    with h5py.File(folder / "whole.h5", "w") as f:
        f.create_dataset("layer/kernel", data=np.arange(20_000, dtype=np.float32))
    (folder / "truncated.h5").write_bytes((folder / "whole.h5").read_bytes()[:30_000])
    with h5py.File(folder / "huge.h5", "w") as f:  # 2 GiB declared, nothing stored: a few KB on disk
        f.create_dataset("layers/conv/vars/0", shape=(2**29,), dtype="float32")
    return folder, path


FLAG_CASES = [
    (["--epochs", "2.5"], "--epochs"),
    (["--epochs", "-1"], "train.nb_epochs"),
    (["--batch_size", "0"], "train.batch_size"),
    (["--batch_size", "1.5"], "--batch_size"),
    (["--batch_size", str(10**12)], "train.batch_size"),
    (["--batch_size", "9000"], "over 1000 times the 8 training images"),
    (["--learning_rate", "nan"], "train.learning_rate"),
    (["--learning_rate", "inf"], "train.learning_rate"),
    (["--learning_rate", "5"], "train.learning_rate"),
    (["--input_size", "100"], "model.input_size"),
    (["--workers", "0"], "train.workers"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--score_threshold", "2"], "valid.score_threshold"),
    (["--nms_threshold", "-1"], "valid.nms_threshold"),
    (["--no-such-flag"], "--no-such-flag"),
    (["frobnicate"], "frobnicate"),
    (["--backend", "Fancy Yolo"], "Fancy Yolo"),
    (["--resume", "{folder}/nowhere"], "nowhere"),
    (["evaluate", "-w", "{folder}/text.h5"], "text.h5 is not a detector weights file"),
    (["evaluate", "-w", "{folder}/empty.h5"], "empty.h5 is not a detector weights file"),
    (["evaluate", "-w", "{folder}/folder.h5"], "folder.h5 is not a detector weights file"),
    (["evaluate", "-w", "{folder}/truncated.h5"], "truncated.h5 is not a detector weights file"),
    (["predict", "-w", "{folder}/text.h5", "-i", "{folder}"], "text.h5 is not a detector weights file"),
    (["evaluate", "-w", "{folder}/huge.h5"], "huge.h5 is not a detector weights file (it declares 2,048 MiB"),
    (["bench", "--steps", "0"], "--steps"),
    (["evaluate", "-w", "{folder}/whole.h5", "--output", "{folder}/existing_file"], "is a file"),
    (["predict", "-w", "{folder}/whole.h5", "-i", "{folder}", "--json", "{folder}"], "is a folder: name the file"),
    (["--resume", "{folder}", "--batch_size", "4"], "--batch_size"),
]


@pytest.mark.parametrize("argv, named", FLAG_CASES, ids=[" ".join(a) for a, _ in FLAG_CASES])
def test_invalid_flags_are_one_line_naming_the_flag(argv, named, good_config, capsys):
    folder, path = good_config
    argv = [a.format(folder=folder) for a in argv]
    code, err, _ = run_main(["--config", path, *argv] if argv[0].startswith("-") else [argv[0], "--config", path,
                                                                                        *argv[1:]], capsys)  # fmt: skip
    assert_one_line_error(code, err, named)


LATE_CASES = [  # valid on their own; refused once the data or the backend is known
    ({"model": {"backend_weights": "nowhere.h5"}}, "model.backend_weights"),
    ({"model": {"backend": "Fancy Yolo"}}, "Fancy Yolo"),
    ({"model": {"backend_options": {"wings": 2}}}, "model.backend_options"),
    ({"model": {"labels": ["ellipse", "dog"]}}, "dog"),
    ({"train": {"pretrained_weights": "nowhere.weights.h5"}}, "nowhere.weights.h5"),
]


@pytest.mark.parametrize("change, named", LATE_CASES, ids=[n for _, n in LATE_CASES])
def test_values_refused_once_data_and_backend_are_known(change, named, good_config, tmp_path, capsys):
    _, path = good_config
    config = json.loads(open(path).read())
    for section, values in change.items():
        config[section].update(values)
    (tmp_path / "late.json").write_text(json.dumps(config))
    code, err, _ = run_main(["--config", str(tmp_path / "late.json")], capsys)
    assert_one_line_error(code, err, named)


@pytest.mark.slow
def test_the_command_line_prints_no_traceback(good_config, tmp_path):
    """The same through a real process: stderr holds the one line, and no Python traceback."""
    folder, path = good_config
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"batch_size": 1.5}}')
    for argv in (["--config", str(bad)], ["evaluate", "--config", path, "-w", str(folder / "truncated.h5")]):
        done = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, done.stderr
        assert done.stderr.strip().startswith("Error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_batch_larger_than_memory_is_refused_before_it_is_allocated(monkeypatch):
    import training
    from config import build_config

    monkeypatch.setattr(training, "physical_memory", lambda: 2**30)
    config = build_config({"model": {"input_size": 416}, "train": {"batch_size": 64}})
    training.check_batch_size(config, 100)  # 64 x 416 x 416 x 3 x 5 bytes: 0.16 GiB
    config["train"]["batch_size"] = 1000
    with pytest.raises(training.TrainingError, match=r"needs 2\.4 GiB for one batch of 416x416 inputs"):
        training.check_batch_size(config, 100)
