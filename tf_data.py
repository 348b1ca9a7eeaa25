"""TensorFlow only: multi-scale training batches as a tf.data.Dataset for model.fit.

Keras' PyDataset adapter fixes every batch dimension from the first two batches it sees, so under the
TensorFlow backend a batch of a new size (multi-scale training) would be refused. This hands the same
BatchGenerator batches to fit through a tf.data.Dataset whose image and grid sizes are left open; TensorFlow
then traces one train step for all sizes. JAX and torch read the BatchGenerator directly (JAX compiles once
per size and keeps each compilation).
"""

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import keras


def fit_data(generator, first_epoch):
    """What model.fit reads for `generator` from epoch `first_epoch` on: the generator itself, or, under the
    TensorFlow backend with multi-scale batches, variable_size_dataset."""
    if generator.multi_scale and keras.backend.backend() == "tensorflow":
        return variable_size_dataset(generator, first_epoch)
    return generator


def variable_size_dataset(generator, first_epoch):
    """generator's batches, epoch after epoch from `first_epoch` (each pass of the dataset is the next epoch:
    set explicitly, so a pass cut short never shifts the next one), with height and width left open."""
    import tensorflow as tf

    def spec(array, open_dims=()):
        shape = [None if d == 0 or d in open_dims else n for d, n in enumerate(array.shape)]
        return tf.TensorSpec(shape, array.dtype)

    x, y = generator[0]
    signature = (
        {"input_image": spec(x["input_image"], (1, 2)), "true_boxes": spec(x["true_boxes"])},
        {"grid": spec(y["grid"], (1, 2)), "seen": spec(y["seen"])},
    )
    epochs = itertools.count(first_epoch)

    def one_epoch():
        generator.set_epoch(next(epochs))
        yield from prefetched(generator, generator.workers)

    dataset = tf.data.Dataset.from_generator(one_epoch, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(generator))).prefetch(1)


def prefetched(generator, workers):
    """generator[0], generator[1], ... in order, computed on `workers` threads up to 2 x workers batches ahead."""
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for idx in range(len(generator)):
            pending.append(pool.submit(generator.__getitem__, idx))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
