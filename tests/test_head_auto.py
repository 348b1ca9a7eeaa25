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


@pytest.mark.slow
def test_custom_config_trains_after_changing_paths_and_labels(tmp_path, capsys):
    """configs/custom.json with only its data paths, labels and weights path changed (and 1 epoch for time)."""
    import json

    from conftest import ROOT, shared_path

    import main as cli
    from demo_data import write_split

    weights = shared_path("weights", "mobilenet_2_5_224_tf_no_top.h5")
    if not weights:
        pytest.skip("../shared/weights is not present (python main.py weights download mobilenet_0.25 fetches it)")
    write_split(str(tmp_path / "data"), 10, seed=4, size=(160, 160))
    config = json.loads(open(f"{ROOT}/configs/custom.json").read())
    config["model"].update(labels=["ellipse", "rectangle", "triangle"], backend_weights=weights)
    config["train"].update(train_image_folder=str(tmp_path / "data" / "images"), nb_epochs=1,
                           train_annot_folder=str(tmp_path / "data" / "annotations"), runs_dir=str(tmp_path / "runs"))  # fmt: skip
    (tmp_path / "custom.json").write_text(json.dumps(config))
    results = cli.main(["--config", str(tmp_path / "custom.json"), "--verbose", "0"])
    out = capsys.readouterr().out
    assert "MobileNet backbone, frozen (weights: " in out and f"head        {AUTO_HEAD_LAYERS} 3x3 conv-BN-leaky" in out
    assert "auto: a classification backbone" in out and 0 <= results["map"] <= 1
    saved = json.loads((tmp_path / "runs" / "custom" / "config.json").read_text())
    assert saved["model"]["head_layers"] == AUTO_HEAD_LAYERS  # the run records the head it built


def test_auto_learning_rate_follows_the_freezing():
    from config import FROZEN_LEARNING_RATE, UNFROZEN_LEARNING_RATE, optimizer_args

    frozen = build_config({"model": {"freeze_backend": True}, "train": {"learning_rate": "auto"}})
    trained = build_config({"model": {"freeze_backend": False}, "train": {"learning_rate": "auto"}})
    partly = build_config({"model": {"freeze_backend": 10}, "train": {"learning_rate": "auto"}})
    assert optimizer_args(frozen)["learning_rate"] == FROZEN_LEARNING_RATE
    assert optimizer_args(trained)["learning_rate"] == optimizer_args(partly)["learning_rate"] == UNFROZEN_LEARNING_RATE
    assert optimizer_args(build_config({"train": {"learning_rate": 0.02}}))["learning_rate"] == 0.02
    with pytest.raises(ConfigError, match='train.learning_rate must be a positive number, or "auto"'):
        build_config({"train": {"learning_rate": "fast"}})
