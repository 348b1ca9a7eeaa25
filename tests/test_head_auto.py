"""model.head_layers "auto": no head layers for darknet detectors' backends, AUTO_HEAD_LAYERS for classification
backbones; a detector file decides the head of the detector it is loaded into."""

import pytest

from backends import get_backend
from config import AUTO_HEAD_LAYERS, ConfigError, build_config
from frontend import YOLO, choose_head_layers


@pytest.mark.parametrize("backend, layers", [("Full Yolo", 0), ("Tiny Yolo", 0), ("MobileNet", AUTO_HEAD_LAYERS),
                                             ("SqueezeNet", AUTO_HEAD_LAYERS), ("ResNet50", AUTO_HEAD_LAYERS)])  # fmt: skip
def test_auto_head_by_backend(backend, layers):
    chosen, why = choose_head_layers("auto", get_backend(backend))
    assert chosen == layers and why.startswith("auto: ")
    assert choose_head_layers(3, get_backend(backend)) == (3, "model.head_layers")


def test_auto_is_a_valid_value_and_other_text_is_not():
    assert build_config({"model": {"head_layers": "auto"}})["model"]["head_layers"] == "auto"
    with pytest.raises(ConfigError, match='model.head_layers must be a whole number, or "auto"'):
        build_config({"model": {"head_layers": "two"}})


def test_a_saved_detector_decides_the_auto_head(tmp_path):
    model = {"backend": "MobileNet", "backend_options": {"alpha": 0.25}, "input_size": 96, "labels": ["a"],
             "anchors": [1.0, 1.0], "max_box_per_image": 2, "head_layers": 1, "head_filters": 16}  # fmt: skip
    saved = YOLO.from_config(build_config({"model": model}), load_pretrained=False)
    saved.save_weights(str(tmp_path / "one.weights.h5"))
    auto = build_config({"model": {**model, "head_layers": "auto"}})
    assert YOLO.from_config(auto, load_pretrained=False).head_layers == AUTO_HEAD_LAYERS
    loaded = YOLO.from_config(auto, load_pretrained=False, weights=str(tmp_path / "one.weights.h5"))
    loaded.load_weights(str(tmp_path / "one.weights.h5"))
    assert loaded.head_layers == 1
