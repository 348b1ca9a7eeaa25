"""Data-parallel training (distribution.py): N replicas on a global batch make exactly the one-device update.

The CPU is split into two logical devices in fresh processes (tests/replica_run.py): TensorFlow by
set_logical_device_configuration, JAX by XLA_FLAGS=--xla_force_host_platform_device_count=2.
"""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ENV, ROOT, TWO_JAX_CPUS, replica_run

from config import build_config
from config_checks import ConfigError
from distribution import DeviceError, parse_devices, place


def largest_difference(a, b, optimizer=False):
    """The largest absolute difference between two runs' model variables (or their optimizer's)."""
    names = [n for n in a["weights"] if n.startswith("optimizer") == optimizer and a["weights"][n]]
    assert names and set(a["weights"]) == set(b["weights"])
    return max(float(np.max(np.abs(np.subtract(a["weights"][n], b["weights"][n])))) for n in names)


def logged_terms_sum_to_the_loss(run):
    history = run["history"]
    terms = sum(float(history[f"{t}_loss"]) for t in ("coord", "obj", "noobj", "class"))
    return abs(terms - float(history["loss"])) <= 1e-5 * float(history["loss"])


@pytest.mark.parametrize(
    "value, expected",
    [("auto", "auto"), ("cpu", [("cpu", 0)]), ("0,1", [("gpu", 0), ("gpu", 1)]), ([0, 1], [("gpu", 0), ("gpu", 1)]),
     (" GPU:1 , gpu:0 ", [("gpu", 1), ("gpu", 0)]), ("cpu:0,cpu:1", [("cpu", 0), ("cpu", 1)])],
)  # fmt: skip
def test_devices_are_read_as_the_readme_writes_them(value, expected):
    assert parse_devices(value) == expected


@pytest.mark.parametrize("value, says", [("tpu:0", "'tpu:0' is not a device"), ("0,0", "names a device twice"),
                                         (",", "names no device"), ("first", "'first' is not a device")])  # fmt: skip
def test_a_wrong_devices_value_is_one_clear_error(value, says):
    with pytest.raises(DeviceError, match=says):
        parse_devices(value)


def test_devices_missing_here_are_named_with_what_the_machine_has():
    with pytest.raises(DeviceError, match=r"no gpu:3 \(it has cpu:0"):
        place("3", 16)


def test_train_devices_and_sync_batchnorm_are_checked_with_the_config():
    assert build_config({"train": {"devices": [0, 1]}})["train"]["devices"] == [0, 1]
    with pytest.raises(ConfigError, match="train.devices must be"):
        build_config({"train": {"devices": 1.5}})
    with pytest.raises(ConfigError, match="train.sync_batchnorm must be one of"):
        build_config({"train": {"sync_batchnorm": 1}})  # 1 is not true: booleans are not numbers here


@pytest.mark.slow
@pytest.mark.xdist_group("replica_runs")
def test_mirrored_strategy_on_two_devices_makes_the_one_device_update(tmp_path, one_device_run):
    one = one_device_run("tensorflow")
    two = replica_run(tmp_path / "two", "cpu:0,cpu:1", "sync")
    assert one["device_row"].endswith("OneDeviceStrategy (cpu:0), batch 4"), one["device_row"]
    assert ("MirroredStrategy over 2 replicas (cpu:0, cpu:1), global batch 4 = 2 per replica; BatchNorm statistics: "
            "synchronised across replicas") in two["device_row"]  # fmt: skip
    # Keras sums the replicas' gradients: unscaled, the replicas' mean losses made every step twice as large
    assert largest_difference(one, two) < 1e-5 and largest_difference(one, two, optimizer=True) < 1e-5
    for key in ("loss", "coord_loss", "noobj_loss", "val_loss"):
        assert float(two["history"][key]) == pytest.approx(float(one["history"][key]), rel=1e-5), key
    assert logged_terms_sum_to_the_loss(one) and logged_terms_sum_to_the_loss(two)
    # Per-replica BatchNorm statistics (the default) are a different update: the head's BatchNorm sees 2 images
    apart = replica_run(tmp_path / "apart", "cpu:0,cpu:1")
    assert "BatchNorm statistics: per replica (train.sync_batchnorm: false)" in apart["device_row"]
    assert largest_difference(one, apart) > 1e-5


@pytest.mark.slow
@pytest.mark.xdist_group("replica_runs")
def test_jax_data_parallel_on_two_devices_makes_the_one_device_update(tmp_path, one_device_run):
    one = one_device_run("jax")
    two = replica_run(tmp_path / "two", "cpu:0,cpu:1", env=TWO_JAX_CPUS)
    assert ("DataParallel over 2 replicas (cpu:0, cpu:1), global batch 4 = 2 per replica; BatchNorm statistics: "
            "global batch") in two["device_row"]  # fmt: skip
    assert largest_difference(one, two) < 1e-5 and largest_difference(one, two, optimizer=True) < 1e-5
    for key in ("loss", "coord_loss", "noobj_loss", "val_loss"):
        assert float(two["history"][key]) == pytest.approx(float(one["history"][key]), rel=1e-5), key
    assert logged_terms_sum_to_the_loss(two)


@pytest.mark.slow
def test_a_batch_the_replicas_cannot_share_is_refused_before_training(tmp_path, demo_like_config):
    config_path, _ = demo_like_config(tmp_path)
    done = subprocess.run([sys.executable, "main.py", "--config", config_path, "--devices", "cpu:0,cpu:1",
                           "--batch_size", "5", "--verbose", "0"], cwd=ROOT, env={**ENV, **TWO_JAX_CPUS},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "train.batch_size 5 does not divide among the 2 replicas (cpu:0, cpu:1)" in done.stderr
    assert "use a multiple of 2, e.g. 4" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
