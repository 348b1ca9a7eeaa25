"""TensorFlow only: multi-scale training batches as a tf.data.Dataset for model.fit.

Keras' PyDataset adapter fixes every batch dimension from the first two batches it sees, so under the
TensorFlow backend a batch of a new size (multi-scale training) would be refused. This hands the same
BatchGenerator batches to fit through a tf.data.Dataset whose image and grid sizes are left open; TensorFlow
then traces one train step for all sizes. JAX and torch read the BatchGenerator directly (JAX compiles once
per size and keeps each compilation).
"""

import itertools

import keras


def fit_data(generator, first_epoch):
    """What model.fit reads from epoch `first_epoch` on (with steps_per_epoch=len(generator)): the
    generator itself, or, under the TensorFlow backend with multi-scale batches, variable_size_dataset."""
    generator.set_epoch(first_epoch)
    if generator.multi_scale and keras.backend.backend() == "tensorflow":
        return variable_size_dataset(generator)
    return generator


def variable_size_dataset(generator):
    """The generator's endless stream of batches with height and width left open."""
    import tensorflow as tf

    def spec(array, open_dims=()):
        shape = [None if d == 0 or d in open_dims else n for d, n in enumerate(array.shape)]
        return tf.TensorSpec(shape, array.dtype)

    x, y = generator[0]
    signature = (
        {"input_image": spec(x["input_image"], (1, 2)), "true_boxes": spec(x["true_boxes"])},
        {"grid": spec(y["grid"], (1, 2)), "seen": spec(y["seen"])},
    )

    def stream():
        return (generator[i] for i in itertools.count())

    return tf.data.Dataset.from_generator(stream, output_signature=signature).prefetch(1)
