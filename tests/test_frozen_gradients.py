"""A frozen backend computes no gradients: the compiled train step drops the backend's backward pass.

Keras asks for the gradients of the trainable weights only; whether the backward convolutions of the frozen layers
are then left out is up to the compiler. These tests read what XLA keeps, on both backends: the convolutions in
TensorFlow's optimised HLO, and JAX's own FLOP count of the step against that of the forward pass.
"""

import re

import pytest
from conftest import run_under_jax

STEP = r"""
import numpy as np
import keras
from frontend import YOLO


def training_model(freeze):
    yolo = YOLO(backend="Tiny Yolo", input_size=128, labels=["a", "b"], max_box_per_image=4, anchors=[1, 1, 2, 2],
                load_pretrained=False, freeze_backend=freeze)
    yolo.model.compile(optimizer=keras.optimizers.SGD(1e-3))
    x = {"input_image": np.zeros((2, 128, 128, 3), np.uint8), "true_boxes": np.zeros((2, 1, 1, 1, 4, 4), np.float32)}
    y = {"grid": np.zeros((2, 4, 4, 2, 7), np.float32), "seen": np.full((2,), 1e9, np.float32)}
    yolo.model.train_on_batch(x, y)  # builds the optimizer's and the metrics' variables
    return yolo, x, y
"""

JAX_FLOPS = (
    STEP
    + r"""
import json
import jax


def flops(function, *args):
    cost = jax.jit(function).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def values(variables):
    return [v.value for v in variables]


result = {}
for freeze in (True, False):
    yolo, x, y = training_model(freeze)
    model, inference = yolo.model, yolo.inference_model
    state = tuple(values(vs) for vs in (model.trainable_variables, model.non_trainable_variables,
                                         model.optimizer.variables, model.metrics_variables))
    forward = flops(lambda t, n, image: inference.stateless_call(t, n, image)[0],
                    values(inference.trainable_variables), values(inference.non_trainable_variables), x["input_image"])
    result["frozen" if freeze else "trained"] = flops(model.train_step, state, (x, y)) / forward
print(json.dumps(result))
"""
)


@pytest.mark.slow
def test_a_frozen_backend_adds_no_backward_convolutions_under_tensorflow_xla():
    import tensorflow as tf

    namespace = {}
    exec(STEP, namespace)

    def convolutions(freeze):
        yolo, x, y = namespace["training_model"](freeze)
        hlo = tf.function(yolo.model.train_step, jit_compile=True).experimental_get_compiler_ir((x, y))(
            stage="optimized_hlo"
        )
        return len(re.findall(r"\bconvolution\(", hlo))

    frozen, trained = convolutions(True), convolutions(False)
    # Tiny Yolo's 8 backend convolutions and the 1x1 detection conv forward; the head's kernel gradient may be a dot
    assert frozen in (9, 10), frozen
    # trained: each backend conv also gets its kernel gradient, and all but the first its input gradient
    assert trained >= 9 + 8 + 7, trained


@pytest.mark.slow
def test_a_frozen_backend_step_costs_a_forward_pass_under_jax():
    pytest.importorskip("jax")
    ratios = run_under_jax(JAX_FLOPS)
    # the forward pass, the loss and the 1x1 head's gradient: nothing of the backend's backward pass
    assert 1.0 <= ratios["frozen"] < 1.05, ratios
    # the backward pass costs about twice the forward one when the backend trains
    assert ratios["trained"] == pytest.approx(3.0, abs=0.3), ratios
