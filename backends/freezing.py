"""Which backend layers train: model.freeze_backend, and the layers a weights file did not cover."""

import fnmatch

import keras

from backends.common import BackendError, layers_with_weights


def freeze_layers(model, spec, keep_trainable=()):
    """spec: True (all), False (none), a number N (the first N layers with weights), or names / fnmatch
    patterns (["conv_1", "conv_2*"]). A frozen layer keeps its weights and BatchNormalization runs in
    inference mode. Layers in `keep_trainable` (those a darknet prefix file did not cover) stay trainable
    under True: frozen random layers could not learn."""
    if spec is False:
        return
    if spec is True and not keep_trainable:
        model.trainable = False
        return
    layers = layers_with_weights(model)
    names = [layer.name for layer in layers]
    if spec is True:
        frozen = set(names) - set(keep_trainable)
    elif isinstance(spec, int):
        frozen = set(names[:spec])
    else:
        frozen = set()
        for pattern in spec:
            matched = fnmatch.filter(names, pattern)
            if not matched:
                raise BackendError(
                    f"model.freeze_backend: {pattern!r} matches no layer of the backend ({model.name}; its layers: "
                    f"{', '.join(names[:6])}, ...)"
                )
            frozen.update(matched)
    for layer in layers:
        layer.trainable = layer.name not in frozen


def unfreeze_keeping_batchnorm(model):
    """Every layer of `model` trainable, except the BatchNormalization layers that were frozen: they keep their
    pretrained statistics and scale in inference mode, as keras.io's fine-tuning guide advises. Switching them to
    the statistics of small training batches changes every feature the head has learned to read at once."""
    layers = list(model._flatten_layers(include_self=False))  # parents before their sublayers
    frozen_norms = {id(layer) for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
                    and not layer.trainable}  # fmt: skip
    model.trainable = True  # sets no sublayer when the model itself was already trainable (partly frozen)
    for layer in layers:
        layer.trainable = id(layer) not in frozen_norms
    return len(frozen_norms)
