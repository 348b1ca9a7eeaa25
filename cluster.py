"""Training on several machines: which worker this process is, the engine that joins the workers, and each
worker's share of every global batch.

A worker joins a cluster through the standard environment variables:
- TensorFlow: TF_CONFIG ({"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}})
  -> tf.distribute.MultiWorkerMirroredStrategy; a "chief" task, if the cluster names one, is worker 0.
- JAX: KERAS_DISTRIBUTION_JOB_ADDRESSES ("host:port,..." or the coordinator's "host:port"),
  KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID -> keras.distribution.initialize
  (jax.distributed) and keras.distribution.DataParallel over every process's devices.

Worker 0 is the chief: it alone writes the run folder. Every worker builds only its rows of each global batch
(BatchGenerator's `shard`), so no image is read twice within a step.
"""

import json
import os
from dataclasses import dataclass

import keras

from errors import UserError

KERAS_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


class ClusterError(UserError):
    """TF_CONFIG or the KERAS_DISTRIBUTION_* variables do not describe a cluster this process can join."""


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster: worker `index` of `count`, through `engine` ("tensorflow" | "jax")."""

    engine: str
    index: int
    count: int

    @property
    def is_chief(self):
        return self.index == 0


def this_worker():
    """-> the Worker the environment makes this process, or None when it names no cluster."""
    if os.environ.get("TF_CONFIG"):
        return tf_config_worker(os.environ["TF_CONFIG"])
    if any(os.environ.get(name) for name in KERAS_VARIABLES):
        return keras_worker({name: os.environ.get(name, "") for name in KERAS_VARIABLES})
    return None


def tf_config_worker(text):
    """TF_CONFIG's text -> Worker; the chief task (if any) counts as worker 0, before the "worker" tasks."""
    try:
        spec = json.loads(text)
        tasks = spec["cluster"].get("chief", []) + spec["cluster"]["worker"]
        task_type, task_index = spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ClusterError(f"TF_CONFIG is not a cluster description ({type(e).__name__}: {e}); it needs "
                           '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
                           ) from None  # fmt: skip
    if task_type not in ("chief", "worker"):
        raise ClusterError(f'TF_CONFIG task type {task_type!r}: this trainer runs "chief" and "worker" tasks only')
    index = task_index + (len(spec["cluster"].get("chief", [])) if task_type == "worker" else 0)
    if not 0 <= index < len(tasks):
        raise ClusterError(f"TF_CONFIG task index {task_index} is outside its {len(tasks)}-task cluster")
    if keras.backend.backend() != "tensorflow":
        raise ClusterError(f"TF_CONFIG is set, but the Keras backend is {keras.backend.backend()}: TF_CONFIG joins "
                           "TensorFlow workers; under JAX set the KERAS_DISTRIBUTION_* variables (see README)")  # fmt: skip
    return Worker("tensorflow", index, len(tasks))


def keras_worker(values):
    """The KERAS_DISTRIBUTION_* values -> Worker."""
    addresses, count, index = (values[name].strip() for name in KERAS_VARIABLES)
    if not (addresses and count.isdigit() and index.isdigit()):
        raise ClusterError("a cluster under JAX needs all three of " + ", ".join(KERAS_VARIABLES) +
                           f" (the coordinator's host:port, the process count, this process's id); got {values}")  # fmt: skip
    if keras.backend.backend() != "jax":
        raise ClusterError(f"KERAS_DISTRIBUTION_* variables are set, but the Keras backend is "
                           f"{keras.backend.backend()}: they join JAX processes; under TensorFlow set TF_CONFIG")  # fmt: skip
    if int(index) >= int(count):
        raise ClusterError(
            f"KERAS_DISTRIBUTION_PROCESS_ID {index} is not below KERAS_DISTRIBUTION_NUM_PROCESSES {count}"
        )
    return Worker("jax", int(index), int(count))


_ENGINES = {}  # both engines must start once, before anything else runs on the devices


def join(worker, devices):
    """-> (engine name, this worker's devices, the engine object) for `worker`, started once per process."""
    if devices != "auto" and devices != [("cpu", 0)]:
        raise ClusterError(f"train.devices {devices!r}: on several machines every worker trains on all of its GPUs "
                           '(train.devices "auto"); limit a worker\'s GPUs with CUDA_VISIBLE_DEVICES')  # fmt: skip
    if worker not in _ENGINES:
        _ENGINES[worker] = tf_join() if worker.engine == "tensorflow" else jax_join()
    return _ENGINES[worker]


def tf_join():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")  # logical devices would start TensorFlow's context too early
    collectives = tf.distribute.experimental.CommunicationImplementation
    # NCCL on GPUs; between CPUs the ring all-reduce is the one that exists
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=collectives.AUTO if gpus else collectives.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    local = [f"gpu:{i}" for i in range(len(gpus))] or ["cpu:0"]
    return "MultiWorkerMirroredStrategy", local, strategy


def jax_join():
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes need it; GPUs use NCCL
    keras.distribution.initialize()  # reads the KERAS_DISTRIBUTION_* variables
    # named by their place on this machine, as tf_join does: JAX's ids are global (process 1's CPU is cpu:2048)
    local = [f"{'cpu' if d.platform == 'cpu' else 'gpu'}:{i}" for i, d in enumerate(jax.local_devices())]
    # Each process hands Keras its own rows of the batch (BatchGenerator's shard): nothing for Keras to split.
    distribution = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    return "DataParallel", local, distribution


def agree(worker, engine_object, value, what):
    """Checks that every worker holds the same integer `value` (e.g. the epoch a resumed run starts at)."""
    if worker is None or worker.count == 1:
        return
    if worker.engine == "tensorflow":
        import tensorflow as tf

        each = engine_object.run(lambda: tf.constant([value]))
        values = engine_object.gather(each, axis=0).numpy()
    else:
        from jax.experimental import multihost_utils

        values = multihost_utils.process_allgather(keras.ops.convert_to_numpy(value))
    low, high = int(values.min()), int(values.max())
    if low != high:
        raise ClusterError(f"the workers disagree on {what}: this worker (worker {worker.index}) has {value}, "
                           f"another {high if value == low else low}; every worker must start from the same run "
                           "folder (--resume the same path, on a shared disk or a copy of the chief's)")  # fmt: skip


def worker_data(generator, worker, engine_object, local_replicas):
    """What model.fit reads on this worker: its rows of every global batch (generator.shard), as the engine wants
    them: a DistributedDataset of per-replica batches (TensorFlow), or a tf.data.Dataset (JAX, which Keras
    requires when several processes train)."""
    from tf_data import batch_dataset

    if worker.engine == "jax":
        return batch_dataset(generator)
    return engine_object.distribute_datasets_from_function(
        lambda context: batch_dataset(generator, rebatch=local_replicas)
    )


class MultiWorkerFixes:
    """Mends two Keras 3 defects under MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388); a mixin of
    the training model under TensorFlow that does nothing when the strategy is not multi-worker.

    - fit's first step reduces a distributed batch as one nested structure, which the strategy refuses: the
      model is built already, so one replica's local batch serves for Keras' symbolic build;
    - Keras averages each step's logs across workers along their first axis, and the logs are scalars: they are
      handed over with one axis.
    """

    def _multi_worker(self):
        import tensorflow as tf

        return isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not self._multi_worker():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        local = self.distribute_strategy.experimental_local_results
        for _, _, batches in iterator:
            data_batch = keras.tree.map_structure(lambda value: local(value)[0], next(batches))
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def train_step(self, data):
        return self._with_axis(super().train_step(data))

    def test_step(self, data):
        return self._with_axis(super().test_step(data))

    def _with_axis(self, logs):
        if not self._multi_worker():
            return logs
        return {name: keras.ops.reshape(value, (1,)) for name, value in logs.items()}
