"""A tiny training run on the devices given, in a fresh process (test_distribution.py runs it):

    python tests/replica_run.py FOLDER DEVICES LOGICAL_CPUS [sync] [unfrozen]

The detector is the default recipe in small: a frozen backbone (random weights written as its backend file,
the same in every process) under one trained conv-BN-leaky head layer, darknet's SGD; `unfrozen` trains the
backbone's BatchNorm layers too, and `sync` sets train.sync_batchnorm.
Under TensorFlow the CPU is split into LOGICAL_CPUS logical devices before anything else (TensorFlow fixes its
devices at start-up); under JAX, XLA_FLAGS=--xla_force_host_platform_device_count does it. The run trains one
epoch of two steps and prints, as its last line, a JSON object: the devices row of the start block, the epoch's
logged losses, and every trained variable (flattened) from last.weights.h5.
"""

import json
import os
import pathlib
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
folder, devices, logical_cpus = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sync_batchnorm, unfrozen = "sync" in sys.argv[4:], "unfrozen" in sys.argv[4:]

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)

import contextlib  # noqa: E402
import io  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from conftest import _demo_like_config  # noqa: E402

from config import build_config  # noqa: E402
from frontend import YOLO  # noqa: E402
from runs import read_history  # noqa: E402
from training import run_training  # noqa: E402
from weight_files import save_backend_weights  # noqa: E402

_, raw = _demo_like_config(folder, train_count=8, valid_count=4, batch_size=4, devices=devices, optimizer="sgd",
                           sync_batchnorm=sync_batchnorm, cache_images=False)  # fmt: skip
backend_file = str(folder / "mobilenet_backend.h5")
raw["model"].update(freeze_backend=not unfrozen, head_layers=1, backend_weights=backend_file)
config = build_config(raw)
keras.utils.set_random_seed(1)
save_backend_weights(YOLO.from_config({**config, "model": {**config["model"], "backend_weights": "none"}}).backend_model,
                     backend_file)  # fmt: skip
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    run_training(config, verbose=0)
run_dir = folder / "runs" / "t"  # a folder per run: the config's run name is its only run
row = next(line.strip() for line in printed.getvalue().splitlines() if line.strip().startswith("device "))
weights = []
with h5py.File(run_dir / "last.weights.h5") as f:
    f.visititems(lambda name, item: weights.append((name, np.asarray(item).ravel().tolist()))
                 if isinstance(item, h5py.Dataset) else None)  # fmt: skip
history = read_history(str(run_dir / "history.csv"))[-1]
print(json.dumps({"device_row": row, "history": history, "weights": dict(weights)}))
