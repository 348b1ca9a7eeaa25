"""A tiny training run on the devices given, in a fresh process (test_distribution.py runs it):

    python tests/replica_run.py FOLDER DEVICES LOGICAL_CPUS [sync] [unfrozen] [epochs=N] [resume=RUN_DIR]

The detector is the default recipe in small: a frozen backbone (random weights written as its backend file,
the same in every process) under one trained conv-BN-leaky head layer, darknet's SGD; `unfrozen` trains the
backbone's BatchNorm layers too, and `sync` sets train.sync_batchnorm.
Under TensorFlow the CPU is split into LOGICAL_CPUS logical devices before anything else (TensorFlow fixes its
devices at start-up); under JAX, XLA_FLAGS=--xla_force_host_platform_device_count does it. The run trains one
epoch of two steps and prints, as its last line, a JSON object: the devices row of the start block, the epoch's
logged losses, every trained variable (flattened) from last.weights.h5, the model's variables as training ended
(`trained`, also on a worker that writes no file), the (batch number, image) pairs this process read for
training, and the files under FOLDER/runs.
On several machines (TF_CONFIG or KERAS_DISTRIBUTION_* set by the caller) give LOGICAL_CPUS 1 and DEVICES auto.
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
settings = dict(option.split("=", 1) for option in sys.argv[4:] if "=" in option)

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)

import contextlib  # noqa: E402
import io  # noqa: E402
import threading  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from conftest import _demo_like_config  # noqa: E402

from batches import BatchGenerator  # noqa: E402
from config import build_config  # noqa: E402
from distribution import place  # noqa: E402
from errors import UserError  # noqa: E402
from frontend import YOLO  # noqa: E402
from runs import read_history  # noqa: E402
from training import run_training  # noqa: E402
from weight_files import save_backend_weights  # noqa: E402

_, raw = _demo_like_config(folder, train_count=8, valid_count=4, batch_size=4, devices=devices, optimizer="sgd",
                           sync_batchnorm=sync_batchnorm, cache_images=False, nb_epochs=int(settings.get("epochs", 1)))  # fmt: skip
backend_file = str(folder / "mobilenet_backend.h5")
raw["model"].update(freeze_backend=not unfrozen, head_layers=1, backend_weights=backend_file)
if keras.backend.backend() == "jax":  # op by op, JAX compiles every op apart: the jitted step is 30% quicker here
    raw["train"].update(run_eagerly=False, jit_compile=True)
config = build_config(raw)
place(devices, config["train"]["batch_size"])  # several machines: the engine starts before anything else runs
keras.utils.set_random_seed(1)
save_backend_weights(YOLO.from_config({**config, "model": {**config["model"], "backend_weights": "none"}}).backend_model,
                     backend_file)  # fmt: skip
read, making = set(), threading.local()
make_batch, load = BatchGenerator.make_batch, BatchGenerator.load


def recorded_make_batch(self, batch):
    making.batch = batch
    return make_batch(self, batch)


def recorded_load(self, index, rng, out_hw):
    if self.stream:
        read.add((making.batch, os.path.basename(self.instances[index]["filename"])))
    return load(self, index, rng, out_hw)


BatchGenerator.make_batch, BatchGenerator.load = recorded_make_batch, recorded_load


class LastWeights(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.values = {v.path: keras.ops.convert_to_numpy(v).ravel().tolist() for v in self.model.weights}


last = LastWeights()
printed = io.StringIO()
try:
    with contextlib.redirect_stdout(printed):
        run_training(config, settings.get("resume"), verbose=0, callbacks=[last])
except UserError as e:
    print(json.dumps({"error": str(e), "printed": printed.getvalue()}))
    sys.exit(3)
run_dir = folder / "runs" / "t"  # a folder per run: the config's run name is its only run
row = next(line.strip() for line in printed.getvalue().splitlines()
           if line.strip().startswith(("device ", "Worker ")))  # fmt: skip
weights, history = [], {}
if (run_dir / "last.weights.h5").exists():
    with h5py.File(run_dir / "last.weights.h5") as f:
        f.visititems(lambda name, item: weights.append((name, np.asarray(item).ravel().tolist()))
                     if isinstance(item, h5py.Dataset) else None)  # fmt: skip
    history = read_history(str(run_dir / "history.csv"))[-1]
written = sorted(str(p.relative_to(folder)) for p in (folder / "runs").rglob("*")) if (folder / "runs").exists() else []
resumed = [line for line in printed.getvalue().splitlines() if line.startswith("Resuming")]
print(
    json.dumps(
        {
            "device_row": row,
            "resumed": resumed,
            "history": history,
            "weights": dict(weights),
            "trained": last.values,
            "read": sorted(read),
            "written": written,
        }
    )
)
