"""keras.applications backends: stride-32 grids at any multiple-of-32 size, preprocessing equal to each
family's preprocess_input, ImageNet weights from a local file."""

import importlib
import json
import os

import keras
import numpy as np
import pytest
from conftest import ROOT, SLOW_TO_BUILD

import main as cli
from backends import get_backend
from backends.applications import APPLICATIONS
from backends.report import backend_rows, count_flops, format_rows, read_speeds
from custom_layers import Normalization
from errors import UserError
from frontend import YOLO
from weight_files import save_backend_weights

MODULES = {
    "ResNet50": "resnet50", "VGG16": "vgg16", "InceptionV3": "inception_v3", "DenseNet201": "densenet",
    "Xception": "xception", "MobileNetV2": "mobilenet_v2", "NASNetMobile": "nasnet",
    "EfficientNetB0": "efficientnet", "ConvNeXtTiny": "convnext",
}  # fmt: skip


def reference_preprocessing(name, image):
    """What each model's ImageNet weights expect: its preprocess_input, or for the two models that
    normalise inside, their own layers (ConvNeXt's PreStem; EfficientNet's documented (x/255 - mean) / std,
    which keras builds only with weights="imagenet")."""
    if name == "ConvNeXtTiny":
        net = keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=(32, 32, 3))
        return keras.ops.convert_to_numpy(net.get_layer("convnext_tiny_prestem_normalization")(image))
    if name == "EfficientNetB0":
        from keras.src.applications.efficientnet import IMAGENET_STDDEV_RGB

        mean_rgb = [0.485, 0.456, 0.406]  # tensorflow/tpu efficientnet's MEAN_RGB / 255, in keras' weight files
        return (image / 255 - np.array(mean_rgb)) / np.array(IMAGENET_STDDEV_RGB)
    return importlib.import_module(f"keras.applications.{MODULES[name]}").preprocess_input(image.copy())


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_preprocessing_equals_the_models_own(name):
    backend = get_backend(name)
    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(Normalization(backend.scale, backend.offset, backend.bgr)(image))
    np.testing.assert_allclose(ours, reference_preprocessing(name, image), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_BUILD else n for n in APPLICATIONS]
)
def test_builds_a_stride_32_grid_for_a_non_square_gray_input(name):
    """One input channel; three at a non-square size: test_model.py's test_every_backend_builds_at_stride_32."""
    yolo = YOLO(name, [96, 128], ["a"], 2, [1, 1], load_pretrained=False, input_channels=1)
    assert (yolo.grid_h, yolo.grid_w) == (3, 4)
    batch = np.zeros((1, 96, 128, 1), np.uint8)
    assert yolo.inference_model.predict_on_batch(batch).shape == (1, 3, 4, 1, 6)


def test_imagenet_weights_from_a_local_file(tmp_path):
    source = get_backend("VGG16").build((64, 64, 3))
    for v in source.weights:
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype(np.float32))
    path = str(tmp_path / "vgg16_backend.h5")
    save_backend_weights(source, path)  # the layout of Keras' own vgg16 *_notop.h5 files
    yolo = YOLO("VGG16", 96, ["a"], 2, [1, 1], backend_weights=path)
    assert yolo.backend_weights == path
    for a, b in zip(source.weights, yolo.backend_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(UserError, match="weights must be 'imagenet' or absent"):
        get_backend("VGG16", weights="places365")


def test_flops_of_tiny_yolo_by_hand():
    """darknet's yolov2-tiny-voc at 416, backend convs: 2 * h * w * k * k * c_in * c_out per layer."""
    layers = [(416, 3, 16), (208, 16, 32), (104, 32, 64), (52, 64, 128), (26, 128, 256), (13, 256, 512),
              (13, 512, 1024), (13, 1024, 1024)]  # fmt: skip
    expected = sum(2 * side * side * 9 * cin * cout for side, cin, cout in layers)
    assert count_flops(get_backend("Tiny Yolo").build((416, 416, 3))) == expected  # 6.93 GFLOPs
    # depthwise + pointwise: MobileNet's first separable block at 64 px (32x32 after the stride-2 stem)
    mobilenet = get_backend("MobileNet", alpha=1.0).build((64, 64, 3))
    stem = 2 * 32 * 32 * 9 * 3 * 32
    assert count_flops(mobilenet) > stem + 2 * 32 * 32 * (9 * 32 + 32 * 64)


@pytest.mark.slow
def test_backends_command_prints_the_table(capsys):
    rows = cli.main(["backends", "--config", os.path.join(ROOT, "configs", "demo.json")])
    out = capsys.readouterr().out
    names = {r["name"] for r in rows}
    assert {"Full Yolo", "Tiny Yolo", "SqueezeNet", "MobileNet", "ResNet50", "ConvNeXtTiny"} <= names
    assert all(r["grid"] == (4, 4) for r in rows)  # the demo's 128 px
    assert "GFLOPs" in out and "tiny_yolo_backend.h5" in out


def test_measured_speeds_are_stored_and_shown_for_the_same_input_shape(tmp_path):
    speeds = {}
    measured = backend_rows((64, 64), names=["SqueezeNet"], bench=True, speeds=speeds)[0]["images_per_second"]
    assert measured > 0
    (tmp_path / "speeds.json").write_text(json.dumps(speeds))  # as main.py stores them
    speeds = read_speeds(str(tmp_path / "speeds.json"))
    assert backend_rows((64, 64), names=["SqueezeNet"], speeds=speeds)[0]["images_per_second"] == measured
    assert backend_rows((64, 96), names=["SqueezeNet"], speeds=speeds)[0]["images_per_second"] is None
    assert backend_rows((64, 64), 1, names=["SqueezeNet"], speeds=speeds)[0]["images_per_second"] is None
    assert "  -  " not in format_rows(backend_rows((64, 64), names=["SqueezeNet"], speeds=speeds), (64, 64))
