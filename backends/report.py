"""The `backends` table: size, cost and (measured) speed of every registered backend, to choose one."""

import json
import os
import time

import keras
import numpy as np

from backends.common import BACKENDS, layers_with_weights


def count_flops(model, trainable_only=False):
    """2 x the multiply-accumulates of the convolution and dense layers (what darknet prints as BFLOPs);
    `trainable_only`: of the layers that train."""
    macs = 0
    for layer in layers_with_weights(model):
        if trainable_only and not layer.trainable:
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape
            macs += _positions(layer) * kh * kw * cin * mult
        elif isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            macs += _positions(layer) * (kh * kw * cin * mult + cin * mult * layer.pointwise_kernel.shape[-1])
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            macs += _positions(layer) * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            macs += _positions(layer) * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 2 * macs


def _positions(layer):
    return int(np.prod(layer.output.shape[1:-1]))


def images_per_second(model, input_shape, batch=8, repeats=5):
    x = np.random.default_rng(0).integers(0, 255, (batch, *input_shape), dtype=np.uint8)
    model.predict_on_batch(x)  # compile and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(x)
    return batch * repeats / (time.perf_counter() - start)


def backend_rows(input_hw, channels=3, names=None, bench=False, speeds=None):
    """One dict per backend: name, parameters, GFLOPs (backend only) at input_hw, grid, weights file, img/s.

    img/s is measured with `bench` (and put into the `speeds` dict, which main.py stores), else taken
    from an earlier measurement there for the same input shape and Keras backend.
    """
    input_shape = (*input_hw, channels)
    stored = {} if speeds is None else speeds
    rows = []
    for key in names or sorted(BACKENDS, key=lambda k: BACKENDS[k].name):
        backend = BACKENDS[key.lower()]()
        model = backend.build(input_shape)
        speed_key = _speed_key(backend.name, input_shape)
        if bench:
            stored[speed_key] = images_per_second(model, input_shape)
        rows.append({
            "name": backend.name,
            "parameters": model.count_params(),
            "gflops": count_flops(model) / 1e9,
            "grid": tuple(model.output.shape[1:3]),
            "weights_file": backend.default_weights_path(),
            "weights_present": os.path.exists(backend.default_weights_path()),
            "images_per_second": stored.get(speed_key),
        })  # fmt: skip
    return rows


def _speed_key(name, input_shape):
    return f"{name} {'x'.join(map(str, input_shape))} {keras.backend.backend()}"


def read_speeds(path):
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def format_rows(rows, input_hw, channels=3):
    kind = "gray" if channels == 1 else "RGB"
    lines = [f"Backends at {input_hw[1]}x{input_hw[0]} {kind} input (backend only, without the 1x1 head):",
             f"{'backend':<16}{'params':>12}{'GFLOPs':>9}{'grid':>8}  {'img/s':>7}  weights file (weights/)"]  # fmt: skip
    for r in rows:
        speed = f"{r['images_per_second']:7.1f}" if r["images_per_second"] is not None else f"{'-':>7}"
        grid = f"{r['grid'][1]}x{r['grid'][0]}"
        name = os.path.basename(r["weights_file"])
        weights = name if r["weights_present"] else f"{name} (missing)"
        lines.append(f"{r['name']:<16}{r['parameters']:>12,}{r['gflops']:>9.2f}{grid:>8}  {speed}  {weights}")
    return "\n".join(lines)
