"""TensorFlow's tf.data for model.fit: multi-scale batches, and each worker's batches on several machines.

Keras' PyDataset adapter fixes every batch dimension from the first two batches it sees, so under the
TensorFlow backend a batch of a new size (multi-scale training) would be refused. This hands the same
BatchGenerator batches to fit through a tf.data.Dataset whose image and grid sizes are left open; TensorFlow
then traces one train step for all sizes. JAX and torch read the BatchGenerator directly (JAX compiles once
per size and keeps each compilation), except on several machines, where Keras takes only a tf.data.Dataset.
"""

import itertools

import keras


def fit_data(generator, first_epoch, placement=None):
    """What model.fit reads from epoch `first_epoch` on (with steps_per_epoch=len(generator)): the
    generator itself, or, under the TensorFlow backend with multi-scale batches, batch_dataset; on several
    machines, this worker's share (cluster.worker_data)."""
    generator.set_epoch(first_epoch)
    if placement is not None and placement.worker is not None:
        from cluster import worker_data

        return worker_data(generator, placement.worker, placement.engine_object, len(placement.devices))
    if generator.multi_scale and keras.backend.backend() == "tensorflow":
        return batch_dataset(generator)
    return generator


def batch_dataset(generator, rebatch=1):
    """The generator's batches (an endless stream for training, one pass for validation) with height and width
    left open; `rebatch` splits each into that many equal batches (one per replica of this worker)."""
    import tensorflow as tf

    def spec(array, open_dims=()):
        shape = [None if d == 0 or d in open_dims else n for d, n in enumerate(array.shape)]
        return tf.TensorSpec(shape, array.dtype)

    x, y = generator[0]
    signature = (
        {"input_image": spec(x["input_image"], (1, 2)), "true_boxes": spec(x["true_boxes"])},
        {"grid": spec(y["grid"], (1, 2)), "seen": spec(y["seen"])},
    )

    def batches():
        numbers = itertools.count() if generator.stream else range(len(generator))
        return (generator[i] for i in numbers)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if not generator.stream:  # a known length, so Keras does not take the end of a pass for data running out
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(generator)))
    if rebatch > 1:
        dataset = dataset.rebatch(len(x["input_image"]) // rebatch)
    return dataset.prefetch(1)
