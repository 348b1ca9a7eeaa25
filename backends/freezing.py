"""Which backend layers train: model.freeze_backend, and the layers a weights file did not cover."""

import fnmatch

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
