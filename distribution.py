"""Which devices train, and the engine that spreads each global batch over them (data parallelism).

train.devices (--devices): "auto" every GPU of this machine (the CPU when there is none), "cpu" the CPU only,
"0,1" those GPUs; "cpu:0,cpu:1"-style names pick devices by kind (logical CPU devices, as the tests make them).

- TensorFlow: tf.distribute.MirroredStrategy over two or more devices, OneDeviceStrategy for one chosen
  device; the model is built and compiled inside its scope.
- JAX: keras.distribution.DataParallel over the chosen devices: the batch is one array sharded on its first
  axis, so the loss and BatchNorm see the global batch.

`batch_size` is the global batch: each of N replicas gets batch_size / N images per step.
Several machines (cluster.py): every worker names its place in the cluster through TF_CONFIG (TensorFlow's
MultiWorkerMirroredStrategy) or the KERAS_DISTRIBUTION_* variables (JAX's DataParallel over every process).
This is the TensorFlow-only boundary for tf.distribute; the rest of the project asks `replica_scale()`.
"""

import contextlib
import weakref
from dataclasses import dataclass, field

import keras

from backends.common import layers_with_weights
from cluster import MultiWorkerFixes, join, this_worker
from errors import UserError

# The training model's bases before keras.Model: Keras' multi-worker defects mended (TensorFlow only).
TRAINER_FIXES = (MultiWorkerFixes,) if keras.backend.backend() == "tensorflow" else ()


class DeviceError(UserError):
    """train.devices names devices this machine does not have, or a batch the replicas cannot share."""


@dataclass
class Placement:
    """Where training runs: `scope()` is entered around building, compiling and fitting the model."""

    engine: str  # "MirroredStrategy", "DataParallel", ... or "one device"
    devices: list = field(default_factory=list)
    engine_object: object = None  # the tf.distribute strategy or keras.distribution object, if one is used
    worker: object = None  # cluster.Worker on several machines; `devices` are then this worker's

    @property
    def workers(self):
        return self.worker.count if self.worker else 1

    @property
    def is_chief(self):
        return self.worker is None or self.worker.is_chief

    @property
    def replicas(self):
        return max(len(self.devices), 1) * self.workers

    @property
    def shard(self):
        """(this worker's index, workers): the rows of each global batch this process builds."""
        return (self.worker.index, self.worker.count) if self.worker else (0, 1)

    def scope(self):
        return self.engine_object.scope() if self.engine_object is not None else contextlib.nullcontext()

    def describe(self, batch_size, batchnorm=""):
        """The start block's account of where training runs; `batchnorm` from synchronize_batchnorm."""
        if self.replicas == 1:
            return f"{self.engine} ({', '.join(self.devices) or 'default device'}), batch {batch_size}"
        if self.worker:
            role = "the chief, which writes the run folder" if self.is_chief else "not the chief: writes nothing"
            return (f"{self.engine} over {self.workers} workers x {len(self.devices)} replicas "
                    f"({', '.join(self.devices)} here; this is worker {self.worker.index}, {role}), global batch "
                    f"{batch_size} = {batch_size // self.replicas} per replica, {batch_size // self.workers} read "
                    f"by each worker; BatchNorm statistics: {batchnorm}")  # fmt: skip
        return (f"{self.engine} over {self.replicas} replicas ({', '.join(self.devices)}), global batch "
                f"{batch_size} = {batch_size // self.replicas} per replica; BatchNorm statistics: {batchnorm}")  # fmt: skip


def parse_devices(value):
    """train.devices -> "auto", or a list of (kind, index) with kind "cpu" or "gpu"."""
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        items = [item.strip() for item in text.split(",") if item.strip()]
    devices = []
    for item in items:
        kind, _, index = item.lower().rpartition(":")
        if item.lower() == "cpu":
            kind, index = "cpu", "0"
        elif not kind:
            kind = "gpu"
        if kind not in ("cpu", "gpu") or not index.isdigit():
            raise DeviceError(f'train.devices {value!r}: {item!r} is not a device; use "auto", "cpu", GPU numbers '
                              'such as "0,1", or names such as "gpu:0,gpu:1"')  # fmt: skip
        devices.append((kind, int(index)))
    if not devices:
        raise DeviceError(f'train.devices {value!r} names no device; use "auto", "cpu" or "0,1"')
    if len(set(devices)) < len(devices):
        raise DeviceError(f"train.devices {value!r} names a device twice")
    return devices


def place(devices, batch_size):
    """-> the Placement train.devices asks for; refuses a batch that the replicas cannot share evenly."""
    wanted = parse_devices(devices)
    worker = this_worker()
    backend = keras.backend.backend()
    if worker is not None:
        placement = Placement(*join(worker, wanted), worker=worker)
    elif backend == "tensorflow":
        placement = tensorflow_placement(wanted)
    elif backend == "jax":
        placement = jax_placement(wanted)
    elif wanted == "auto":
        placement = Placement("one device")
    else:
        raise DeviceError(f"train.devices {devices!r}: choosing devices is supported under the TensorFlow and JAX "
                          f'backends; with {backend} keep "auto"')  # fmt: skip
    if batch_size % placement.replicas:
        raise DeviceError(f"train.batch_size {batch_size} does not divide among the {placement.replicas} replicas "
                          f"({', '.join(placement.devices)}): use a multiple of {placement.replicas}, e.g. "
                          f"{max(batch_size // placement.replicas, 1) * placement.replicas}")  # fmt: skip
    return placement


def available(present, wanted):
    """The present device names (lowercase "kind:index") for the wanted (kind, index) list; names a missing one."""
    names = [f"{k}:{i}" for k, i in wanted]
    missing = [n for n in names if n not in present]
    if missing:
        raise DeviceError(f"train.devices: this machine has no {', '.join(missing)} (it has "
                          f"{', '.join(sorted(present)) or 'no such device'})")  # fmt: skip
    return names


def tensorflow_placement(wanted):
    import tensorflow as tf

    present = {f"{d.device_type.lower()}:{i}" for t in ("CPU", "GPU")
               for i, d in enumerate(tf.config.list_logical_devices(t))}  # fmt: skip
    if wanted == "auto":
        gpus = sorted(n for n in present if n.startswith("gpu:"))
        if len(gpus) < 2:
            return Placement("one device", gpus[:1] or ["cpu:0"])
        names = gpus
    else:
        names = available(present, wanted)
    if len(names) == 1:
        return Placement("OneDeviceStrategy", names, tf.distribute.OneDeviceStrategy(f"/{names[0]}"))
    # On CPU devices NCCL is absent; copying to one device and back is the all-reduce that works everywhere.
    all_reduce = None if any(n.startswith("gpu") for n in names) else tf.distribute.ReductionToOneDevice()
    strategy = tf.distribute.MirroredStrategy([f"/{n}" for n in names], cross_device_ops=all_reduce)
    return Placement("MirroredStrategy", names, strategy)


def jax_placement(wanted):
    import jax

    present = {f"{'cpu' if d.platform == 'cpu' else 'gpu'}:{d.id}": d for d in jax.devices()}
    present.update({f"cpu:{d.id}": d for d in jax.devices("cpu")})
    if wanted == "auto":
        names = sorted(n for n in present if n.startswith("gpu:"))
        if len(names) < 2:
            return Placement("one device", names[:1] or ["cpu:0"])
    else:
        names = available(set(present), wanted)
    distribution = keras.distribution.DataParallel(devices=[f"{present[n].platform}:{present[n].id}" for n in names])
    return Placement("DataParallel" if len(names) > 1 else "one device", names, distribution)


def replica_scale():
    """The factor that turns a replica's mean loss into its share of the global batch's: Keras sums the
    replicas' gradients under tf.distribute (and scales its own losses so); 1 everywhere else."""
    if keras.backend.backend() != "tensorflow":
        return 1.0
    import tensorflow as tf

    return 1.0 / tf.distribute.get_strategy().num_replicas_in_sync


def synchronize_batchnorm(model, placement, sync):
    """train.sync_batchnorm: BatchNorm statistics over the global batch under tf.distribute (Keras'
    synchronized=True); -> how the trained BatchNorm layers compute their statistics, for the start line."""
    if placement.replicas == 1:
        return ""
    if keras.backend.backend() == "jax":
        return "global batch (JAX shards one array)"
    if not sync:
        return "per replica (train.sync_batchnorm: false)"
    for layer in layers_with_weights(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return "synchronised across replicas"


_DIRECT_CALLS = weakref.WeakKeyDictionary()


def predict_on_batch(model, batch):
    """model.predict_on_batch, except under a tf.distribute strategy of several replicas: there Keras runs the
    whole batch on every replica and joins the copies (N times the work, and across the network on several
    machines), so the model is called directly, on this process's copy of the weights."""
    if keras.backend.backend() != "tensorflow" or model.distribute_strategy.num_replicas_in_sync == 1:
        return model.predict_on_batch(batch)
    if model not in _DIRECT_CALLS:
        import tensorflow as tf

        _DIRECT_CALLS[model] = tf.function(lambda images: model(images, training=False))
    return keras.tree.map_structure(keras.ops.convert_to_numpy, _DIRECT_CALLS[model](batch))
