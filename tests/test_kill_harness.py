"""Training that survives anything: a run killed with SIGKILL at 20 random moments (half of them while a
checkpoint file is being written) and resumed each time ends with the weights of the same run uninterrupted; a
loss that stops being finite is retried once at a lower learning rate, then refused."""

import csv
import json
import os
import random
import signal
import time

import h5py
import keras
import numpy as np
import pytest
from forked_main import Runs, read

pytestmark = pytest.mark.slow
EPOCHS = 16
KILLS = 20


def detector_arrays(path):
    arrays = []

    def collect(name, item):  # visititems stops at the first return value that is not None
        if isinstance(item, h5py.Dataset) and item.dtype.kind == "f":
            arrays.append(item[()])

    with h5py.File(path) as f:
        f.visititems(collect)
    assert arrays, f"no weights in {path}"
    return arrays


def history_epochs(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def check_run_folder(run_dir):
    """Every file a kill can leave behind opens, and history.csv is 1..n with n the resume epoch or one more."""
    with open(run_dir / "config.json") as f:
        json.load(f)
    resume_epoch = 0
    for name in ("resume.h5", "resume.prev.h5", "last.weights.h5", "best.weights.h5"):
        if (run_dir / name).exists():
            with h5py.File(run_dir / name) as f:
                if name == "resume.h5":
                    resume_epoch = int(f.attrs["epoch"])
    if (run_dir / "history.csv").exists():
        epochs = history_epochs(run_dir)
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) in (resume_epoch, resume_epoch + 1), epochs
    return resume_epoch


CHECKPOINT_TEMPORARIES = ("resume.h5.tmp", "last.tmp.weights.h5", "best.tmp.weights.h5", "history.csv.tmp")


def kill_while_writing(proc, run_dir):
    """SIGKILL as soon as one of the epoch's checkpoint files is being written (atomic_write's temporary)."""
    while proc.is_alive():
        if run_dir.exists() and any(name in CHECKPOINT_TEMPORARIES for name in os.listdir(run_dir)):
            break
        time.sleep(0.0005)
    proc.kill()


def kill_during_an_epoch(proc, run_dir, rng):
    """SIGKILL at a random moment of the epoch after the next one finishes (so every resume makes progress)."""
    rows = len(history_rows(run_dir))
    while proc.is_alive() and len(history_rows(run_dir)) <= rows:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.5))  # where in that epoch varies; the outcome asserted does not
    proc.kill()


def history_rows(run_dir):
    try:
        with open(run_dir / "history.csv") as f:
            return f.read().splitlines()[1:]
    except OSError:
        return []


def test_twenty_kills_and_resumes_end_where_the_uninterrupted_run_ends(tmp_path, demo_like_config):
    """Each run is a main.py process of its own, forked from one that imported TensorFlow once (forked_main.py)."""
    path, config = demo_like_config(tmp_path, nb_epochs=EPOCHS, train_count=8, valid_count=4, checkpoint_every=1)
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({**config, "train": {**config["train"], "run_name": "uninterrupted"}}))
    runs, stderr = Runs(), tmp_path / "stderr.txt"
    code, err = runs.run(["--config", str(reference), "--verbose", "0"], stderr)
    assert code == 0, err[-2000:]
    run_dir, rng, outcomes = tmp_path / "runs" / "t", random.Random(0), []
    for kill in range(KILLS):
        first = not (run_dir / "config.json").exists()
        proc = runs.start(["--config", path] if first else ["--resume", str(run_dir)], stderr)
        if kill % 2:
            kill_while_writing(proc, run_dir)
        else:
            kill_during_an_epoch(proc, run_dir, rng)
        proc.join()
        err = read(stderr)
        assert proc.exitcode in (0, -signal.SIGKILL, 2), err[-2000:]
        if proc.exitcode == 2:  # the run had already finished its epochs: nothing left to resume
            assert "has finished its" in err, err
            break
        if (run_dir / "config.json").exists():
            outcomes.append(check_run_folder(run_dir))
    if check_run_folder(run_dir) < EPOCHS:
        code, err = runs.run(["--resume", str(run_dir), "--verbose", "0"], stderr)
        assert code == 0, err[-2000:]
    assert history_epochs(run_dir) == list(range(1, EPOCHS + 1))
    assert len(set(outcomes)) > 2  # the kills landed at several epochs
    differences = [np.max(np.abs(a - b)) for a, b in zip(detector_arrays(run_dir / "last.weights.h5"),
                                                          detector_arrays(tmp_path / "runs" / "uninterrupted" /
                                                                          "last.weights.h5"))]  # fmt: skip
    print(f"{len(outcomes)} kills, resume epochs {outcomes}; largest weight difference {max(differences):.3g}")
    assert max(differences) <= 1e-6


class Poison(keras.callbacks.Callback):
    """Turns a weight into NaN after the given batches ((epoch, batch), from 0): a stand-in for a diverging run."""

    def __init__(self, at):
        super().__init__()
        self.at, self.epoch = set(at), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) in self.at:
            self.at.discard((self.epoch, batch))
            variable = self.model.trainable_variables[0]
            variable.assign(np.full(variable.shape, np.nan, "float32"))


def nan_run(tmp_path, demo_like_config, at):
    from config import build_config
    from training import run_training

    _, config = demo_like_config(tmp_path, nb_epochs=2, train_count=8, valid_count=4)
    return run_training(build_config(config), verbose=0, callbacks=[Poison(at)])


def test_a_nan_loss_restarts_from_the_last_good_epoch_at_a_lower_rate(tmp_path, demo_like_config, capsys):
    results = nan_run(tmp_path, demo_like_config, at=[(1, 0)])  # batch 2 of epoch 2 sees the NaN weight
    out = capsys.readouterr().out
    assert "Warning: the loss became nan at epoch 2, batch 2. Restarting from epoch 2" in out
    run_dir = tmp_path / "runs" / "t"
    assert history_epochs(run_dir) == [1, 2] and np.isfinite(results["map"])
    for name in ("last.weights.h5", "best.weights.h5", "resume.h5"):
        assert all(np.all(np.isfinite(a)) for a in detector_arrays(run_dir / name)), name


def test_nan_weights_at_an_epoch_end_are_never_saved(tmp_path, demo_like_config, capsys):
    nan_run(tmp_path, demo_like_config, at=[(0, 1)])  # after the last batch of epoch 1: no loss saw it
    assert "Warning: a weight became NaN or infinite at the end of epoch 1. Restarting from epoch 1" in (
        capsys.readouterr().out)  # fmt: skip
    run_dir = tmp_path / "runs" / "t"
    assert history_epochs(run_dir) == [1, 2]
    assert all(np.all(np.isfinite(a)) for a in detector_arrays(run_dir / "last.weights.h5"))


def test_a_second_nan_gives_up_with_a_message(tmp_path, demo_like_config, capsys):
    from stages import TrainingError

    with pytest.raises(
        TrainingError, match=r"became (nan|NaN or infinite) again \(.+\) after lowering the learning rate x0.1"
    ):
        nan_run(tmp_path, demo_like_config, at=[(0, 1), (1, 0)])
    run_dir = tmp_path / "runs" / "t"
    assert all(np.all(np.isfinite(a)) for a in detector_arrays(run_dir / "last.weights.h5"))


def test_a_full_disk_mid_run_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, demo_like_config,
                                                                                 monkeypatch):  # fmt: skip
    import runs
    from stages import TrainingError

    real, calls = runs.save_detector, []

    def fills_up(yolo, path):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote last and best; epoch 2 finds the disk full
            raise OSError(28, "No space left on device")
        real(yolo, path)

    monkeypatch.setattr(runs, "save_detector", fills_up)
    with pytest.raises(TrainingError, match=r"No space left on device\); training stopped\. The last complete"):
        nan_run(tmp_path, demo_like_config, at=[])
    run_dir = tmp_path / "runs" / "t"
    assert check_run_folder(run_dir) == 1 and detector_arrays(run_dir / "last.weights.h5")
    assert not [name for name in os.listdir(run_dir) if ".tmp" in name]


def test_an_unwritable_or_full_runs_dir_is_refused_before_training(tmp_path, demo_like_config, monkeypatch, capsys):
    import shutil

    import main as cli
    import training

    path, config = demo_like_config(tmp_path)
    (tmp_path / "a_file").write_text("x")
    config["train"]["runs_dir"] = str(tmp_path / "a_file" / "runs")
    (tmp_path / "blocked.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        cli.main(["--config", str(tmp_path / "blocked.json")])
    assert "cannot write a run folder there" in capsys.readouterr().err
    monkeypatch.setattr(training.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**5, 10**5))
    with pytest.raises(SystemExit):
        cli.main(["--config", path])
    assert "MiB free, and one epoch's checkpoints need about" in capsys.readouterr().err
