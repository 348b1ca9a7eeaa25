"""The model, loss, a train step with the mAP callback, and prediction under KERAS_BACKEND=jax (run in a subprocess: the backend is fixed at import)."""

import numpy as np
import pytest
from conftest import run_under_jax

pytest.importorskip("jax")

SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from config import build_config, generator_args, loss_args
from evaluate import MapEvaluation
from frontend import YOLO
from loss import YoloLoss
from batches import BatchGenerator
from preprocessing import TargetLayout

config = build_config({"valid": {"map_every": 1}})
inputs = np.load(sys.argv[1])
loss = YoloLoss([1.0, 1.5, 2.5, 2.0], **loss_args(config))
total, terms = loss(inputs["y_true"], inputs["y_pred"], inputs["true_boxes"], inputs["seen"])

yolo = YOLO(backend="Tiny Yolo", input_size=128, labels=["a", "b"], max_box_per_image=4, anchors=[1, 1, 2, 2],
            load_pretrained=False, freeze_backend=False)
head = yolo.model.get_layer("DetectionLayer")
before = np.array(head.kernel)
yolo.model.compile(optimizer=keras.optimizers.Adam(1e-2))
instance = {"filename": "tests/data/shapes.jpg", "width": 128, "height": 128,
            "object": [{"name": "a", "difficult": False, "xmin": 10, "ymin": 20, "xmax": 60, "ymax": 90}]}
args = {**generator_args(config, "train"), "batch_size": 2, "augmentation": None, "shuffle": False, "workers": 2,
        "processes": True}  # fit fed by loader processes
history = yolo.model.fit(BatchGenerator([instance], TargetLayout.of(yolo), **args), steps_per_epoch=1, epochs=1, verbose=0,
                         callbacks=[MapEvaluation(yolo, [instance], config)])
predicted = yolo.predict("tests/data/shapes.jpg", score_threshold=0.0)
frozen = YOLO(backend="Tiny Yolo", input_size=64, labels=["a", "b"], max_box_per_image=4, anchors=[1, 1, 2, 2])
frozen_before = [np.array(v) for v in frozen.backend_model.weights]  # BatchNorm moving statistics included
frozen.model.compile(optimizer=keras.optimizers.Adam(1e-2))
frozen.model.fit(BatchGenerator([instance], TargetLayout.of(frozen), **args), steps_per_epoch=1, epochs=1, verbose=0)
frozen_unchanged = all(np.array_equal(a, np.array(v)) for a, v in zip(frozen_before, frozen.backend_model.weights))
gray = YOLO(backend="MobileNet", input_size=64, labels=["a"], max_box_per_image=4, anchors=[1, 1],
            backend_options={"alpha": 0.25}, load_pretrained=False, input_channels=1, head_layers=1, head_filters=8)
gray_predicted = gray.predict("tests/data/shapes.jpg", score_threshold=0.0)
bf16 = YOLO(backend="MobileNet", input_size=64, labels=["a"], max_box_per_image=4, anchors=[1, 1],
            backend_options={"alpha": 0.25}, load_pretrained=False, freeze_backend=False, precision="mixed_bfloat16")
bf16.model.compile(optimizer=keras.optimizers.Adam(1e-3))
bf16_x = {"input_image": np.zeros((2, 64, 64, 3), np.uint8), "true_boxes": np.zeros((2, 1, 1, 1, 4, 4), np.float32)}
bf16_loss = bf16.model.train_on_batch(bf16_x, {"grid": np.zeros((2, 2, 2, 1, 6), np.float32),
                                              "seen": np.full((2,), 1e9, np.float32)})[0]
bf16_conv = next(l for l in bf16.backend_model._flatten_layers() if isinstance(l, keras.layers.Conv2D)).compute_dtype
print(json.dumps({"loss": float(total), "terms": {k: float(v) for k, v in terms.items()},
                  "fit_loss": history.history["loss"][0], "map": history.history["val_map50"][0],
                  "predicted": len(predicted), "head_changed": bool(np.abs(np.array(head.kernel) - before).max() > 0),
                  "gray_predicted": len(gray_predicted), "gray_input": list(gray.inference_model.input.shape[1:]),
                  "bf16_loss": float(bf16_loss), "bf16_conv": bf16_conv, "frozen_unchanged": frozen_unchanged,
                  "frozen_trainable": len(frozen.model.trainable_weights),
                  "shape": list(yolo.inference_model.predict_on_batch(np.zeros((1, 128, 128, 3), np.uint8)).shape)}))
"""


@pytest.mark.slow
def test_loss_and_train_step_under_jax(tmp_path, make_loss):
    rng = np.random.default_rng(0)
    inputs = {
        "y_pred": rng.normal(size=(2, 3, 4, 2, 7)).astype(np.float32),
        "y_true": np.zeros((2, 3, 4, 2, 7), np.float32),
        "true_boxes": np.zeros((2, 1, 1, 1, 3, 4), np.float32),
        "seen": np.array([0, 50000], np.float32),
    }
    inputs["y_true"][0, 1, 2, 1] = [2.4, 1.3, 2.0, 1.5, 1, 0, 1]
    inputs["true_boxes"][0, 0, 0, 0, 0] = [2.4, 1.3, 2.0, 1.5]
    np.savez(tmp_path / "inputs.npz", **inputs)
    result = run_under_jax(SCRIPT, str(tmp_path / "inputs.npz"))

    total, terms = make_loss([1.0, 1.5, 2.5, 2.0])(
        inputs["y_true"], inputs["y_pred"], inputs["true_boxes"], inputs["seen"]
    )
    assert result["loss"] == pytest.approx(float(total), rel=1e-5)  # same numbers as the TensorFlow backend
    for name, value in terms.items():
        assert result["terms"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-6)
    assert np.isfinite(result["fit_loss"]) and result["head_changed"]
    assert 0 <= result["map"] <= 1
    assert result["predicted"] > 0  # every candidate passes threshold 0; NMS leaves at least one box
    assert result["shape"] == [1, 4, 4, 2, 7]
    assert result["gray_input"] == [64, 64, 1] and result["gray_predicted"] > 0  # 1-channel model with head layers
    assert result["bf16_conv"] == "bfloat16" and np.isfinite(result["bf16_loss"])  # mixed precision under JAX
    # a frozen backend under JAX: weights and BatchNorm statistics unchanged by training, only the head trains
    assert result["frozen_unchanged"] and result["frozen_trainable"] == 2
