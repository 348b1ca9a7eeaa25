"""Training on several machines (cluster.py): workers on 127.0.0.1, each a fresh process (tests/replica_run.py)
with its own TF_CONFIG (or KERAS_DISTRIBUTION_* variables), together make the one-process update on the same
global batches, each reading only its own rows, and only the chief writes a run folder.
"""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ENV, REPLICA_RUN, ROOT
from test_distribution import largest_difference

from cluster import ClusterError, keras_worker, tf_config_worker

STEPS = 2  # replica_run: 8 training images, global batch 4


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_env(engine, ports, index):
    if engine == "tensorflow":
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
    return {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(len(ports)), "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}  # fmt: skip


def cluster_run(folders, *options, engine="tensorflow", resume=None):
    """Worker i trains in folders[i] (its own copy of the tiny dataset) -> each worker's (exit code, JSON).
    `resume`: the run folder each worker is given with --resume (one per worker)."""
    ports, workers = free_ports(len(folders)), []
    for i, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        extra = [f"resume={resume[i]}"] if resume else []
        # files, not pipes: a worker blocked on a full pipe would stall the other in a collective
        out, err = open(folder / "stdout.txt", "w"), open(folder / "stderr.txt", "w")
        command = [sys.executable, REPLICA_RUN, str(folder), "auto", "1", *options, *extra]
        workers.append((subprocess.Popen(command, cwd=ROOT, env={**ENV, **cluster_env(engine, ports, i)},
                                         stdout=out, stderr=err), folder))  # fmt: skip
    results = []
    for process, folder in workers:
        code = process.wait(timeout=600)
        lines = (folder / "stdout.txt").read_text().strip().splitlines()
        assert lines, (folder / "stderr.txt").read_text()[-3000:]
        results.append((code, json.loads(lines[-1])))
    return results


def run_folders(result):
    return sorted({name.split("/")[1] for name in result["written"] if not name.startswith("runs/cache")})


def test_tf_config_names_the_worker_with_the_chief_first():
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}
    worker = tf_config_worker(json.dumps(spec))
    assert (worker.index, worker.count, worker.is_chief) == (2, 3, False)
    chief = tf_config_worker(json.dumps({**spec, "task": {"type": "chief", "index": 0}}))
    assert (chief.index, chief.is_chief) == (0, True)


@pytest.mark.parametrize("text, says", [("{", "TF_CONFIG is not a cluster description"),
                                        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
                                         "runs \"chief\" and \"worker\" tasks only"),
                                        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
                                         "outside its 1-task cluster")])  # fmt: skip
def test_a_wrong_tf_config_is_one_clear_error(text, says):
    with pytest.raises(ClusterError, match=says):
        tf_config_worker(text)


def test_the_jax_variables_must_come_together_and_under_jax():
    values = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
              "KERAS_DISTRIBUTION_PROCESS_ID": ""}  # fmt: skip
    with pytest.raises(ClusterError, match="needs all three of"):
        keras_worker(values)
    with pytest.raises(ClusterError, match="the Keras backend is tensorflow"):  # the suite's backend
        keras_worker({**values, "KERAS_DISTRIBUTION_PROCESS_ID": "1"})


def test_a_worker_builds_exactly_its_rows_of_each_global_batch_with_the_global_seen_count(tmp_path):
    from test_image_cache import LABELS, shapes

    from batches import BatchGenerator
    from config import build_config, generator_args
    from preprocessing import TargetLayout

    instances = shapes(tmp_path / "data")
    layout = TargetLayout(LABELS, (64, 64), (2, 2), [1.0, 1.0, 2.0, 2.0], 6, 3)
    args = {**generator_args(build_config({}), "train"), "batch_size": 4, "workers": 1}  # augmentation on
    whole = BatchGenerator(instances, layout, **args)
    halves = [BatchGenerator(instances, layout, **args, shard=(w, 2)) for w in (0, 1)]
    for number in (0, 1, 5):  # the first epoch, and one after the images wrapped around
        (x, y), parts = whole[number], [half[number] for half in halves]
        for key in ("input_image", "true_boxes"):
            np.testing.assert_array_equal(np.concatenate([p[0][key] for p in parts]), x[key])
        np.testing.assert_array_equal(np.concatenate([p[1]["grid"] for p in parts]), y["grid"])
        assert all(set(p[1]["seen"]) == {number * 4} for p in parts) and set(y["seen"]) == {number * 4}


def test_only_auto_devices_are_taken_on_several_machines(monkeypatch):
    from distribution import place

    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}})
    )
    with pytest.raises(ClusterError, match="limit a worker's GPUs with CUDA_VISIBLE_DEVICES"):
        place("0,1", 16)


@pytest.mark.slow
@pytest.mark.xdist_group("replica_runs")
def test_two_tensorflow_workers_make_the_one_process_update_and_only_the_chief_writes(tmp_path, one_device_run):
    one = one_device_run("tensorflow")  # sync_batchnorm, which the workers use, is the same update on one device
    (code0, chief), (code1, worker) = cluster_run([tmp_path / "w0", tmp_path / "w1"], "sync")
    assert code0 == code1 == 0, (chief.get("error"), worker.get("error"))
    assert ("MultiWorkerMirroredStrategy over 2 workers x 1 replicas (cpu:0 here; this is worker 0, the chief, "
            "which writes the run folder), global batch 4 = 2 per replica, 2 read by each worker") in chief["device_row"]  # fmt: skip
    assert "this is worker 1, not the chief: writes nothing" in worker["device_row"]
    # the same weights on both workers, equal to one process on the same global batches
    assert largest_difference({"weights": chief["trained"]}, {"weights": worker["trained"]}) == 0
    assert largest_difference({"weights": chief["trained"]}, {"weights": one["trained"]}) < 1e-5
    for key in ("loss", "coord_loss", "noobj_loss", "val_loss", "val_map50"):
        assert float(chief["history"][key]) == pytest.approx(float(one["history"][key]), rel=1e-5), key
    # each worker read its own rows of every step's batch: together exactly the one process's images
    steps = [{tuple(r) for r in run["read"] if r[0] < STEPS} for run in (chief, worker, one)]
    assert not steps[0] & steps[1] and steps[0] | steps[1] == steps[2] and len(steps[2]) == 4 * STEPS
    # exactly one run folder, the chief's, with one set of checkpoints; worker 1 wrote none
    assert run_folders(chief) == ["t"] and run_folders(worker) == []
    assert sum(name.endswith("last.weights.h5") for name in chief["written"] + worker["written"]) == 1

    # --resume: both workers continue the chief's run folder at epoch 2 and stay in step
    run_dir = tmp_path / "w0" / "runs" / "t"
    (code0, chief), (code1, worker) = cluster_run([tmp_path / "w0", tmp_path / "w1"], "sync", "epochs=2",
                                                  resume=[run_dir, run_dir])  # fmt: skip
    assert code0 == code1 == 0, (chief.get("error"), worker.get("error"))
    assert chief["resumed"] == worker["resumed"] == [f"Resuming {run_dir} at epoch 2/2."]
    assert chief["history"]["epoch"] == "2" and run_folders(worker) == []
    assert largest_difference({"weights": chief["trained"]}, {"weights": worker["trained"]}) == 0

    # workers given run folders at different epochs refuse to start apart
    fresh = tmp_path / "w1" / "runs" / "fresh"
    fresh.mkdir(parents=True)
    (code0, chief), (code1, worker) = cluster_run([tmp_path / "w0", tmp_path / "w1"], "sync", "epochs=3",
                                                  resume=[run_dir, fresh])  # fmt: skip
    assert code0 == code1 == 3
    assert "the workers disagree on the epoch to resume at: this worker (worker 0) has 2, another 0" in chief["error"]
    assert "worker 1) has 0, another 2" in worker["error"]


@pytest.mark.slow
@pytest.mark.xdist_group("replica_runs")
def test_two_jax_processes_make_the_one_process_update_and_only_the_chief_writes(tmp_path, one_device_run):
    one = one_device_run("jax")
    (code0, chief), (code1, worker) = cluster_run([tmp_path / "w0", tmp_path / "w1"], engine="jax")
    assert code0 == code1 == 0, (chief.get("error"), worker.get("error"))
    assert ("DataParallel over 2 workers x 1 replicas (cpu:0 here; this is worker 0, the chief, which writes the "
            "run folder), global batch 4 = 2 per replica, 2 read by each worker") in chief["device_row"]  # fmt: skip
    assert "(cpu:0 here; this is worker 1, not the chief: writes nothing)" in worker["device_row"]  # not JAX's cpu:2048
    assert largest_difference({"weights": chief["trained"]}, {"weights": worker["trained"]}) == 0
    assert largest_difference({"weights": chief["trained"]}, {"weights": one["trained"]}) < 1e-5
    for key in ("loss", "coord_loss", "noobj_loss", "val_loss", "val_map50"):
        assert float(chief["history"][key]) == pytest.approx(float(one["history"][key]), rel=1e-5), key
    steps = [{tuple(r) for r in run["read"] if r[0] < STEPS} for run in (chief, worker, one)]
    assert not steps[0] & steps[1] and steps[0] | steps[1] == steps[2]
    assert run_folders(chief) == ["t"] and run_folders(worker) == []

    run_dir, fresh = tmp_path / "w0" / "runs" / "t", tmp_path / "w1" / "runs" / "fresh"
    fresh.mkdir(parents=True)
    (code0, chief), (code1, worker) = cluster_run([tmp_path / "w0", tmp_path / "w1"], "epochs=2", engine="jax",
                                                  resume=[run_dir, fresh])  # fmt: skip
    assert code0 == code1 == 3
    assert "the workers disagree on the epoch to resume at: this worker (worker 0) has 1, another 0" in chief["error"]
