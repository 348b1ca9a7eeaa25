"""Config loading: defaults, keras-yolo2 files unchanged, aliases, clear errors, command-line overrides."""

import json
import warnings

import pytest

from config import DEFAULTS, ConfigError, apply_overrides, build_config, load_config
from main import parse_args

# experiencor/keras-yolo2's config.json, as its README ships it.
KERAS_YOLO2 = {
    "model": {
        "backend": "Full Yolo",
        "input_size": 416,
        "anchors": [0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778, 9.77052, 9.16828],
        "max_box_per_image": 10,
        "labels": ["raccoon"],
    },
    "train": {
        "train_image_folder": "/home/andy/data/raccoon_dataset/images/",
        "train_annot_folder": "/home/andy/data/raccoon_dataset/anns/",
        "train_times": 10,
        "pretrained_weights": "",
        "batch_size": 16,
        "learning_rate": 1e-4,
        "nb_epochs": 50,
        "warmup_epochs": 3,
        "object_scale": 5.0,
        "no_object_scale": 1.0,
        "coord_scale": 1.0,
        "class_scale": 1.0,
        "saved_weights_name": "full_yolo_raccoon.h5",
        "debug": True,
    },
    "valid": {"valid_image_folder": "", "valid_annot_folder": "", "valid_times": 1},
}


def test_keras_yolo2_config_loads_unchanged(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(KERAS_YOLO2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown-key warnings
        config = load_config(str(path))
    assert config["model"]["labels"] == ["raccoon"]
    assert config["train"]["train_times"] == 10 and config["train"]["warmup_epochs"] == 3
    assert config["train"]["optimizer"] == "adam"  # a default filled in
    assert config["model"]["freeze_backend"] is True


def test_keras_yolo2_debug_key_is_noted_not_kept(capsys):
    config = build_config(KERAS_YOLO2)
    assert "debug" not in config["train"]
    assert "'train.debug' (keras-yolo2's debug printing) has no effect here" in capsys.readouterr().out


def test_consumer_arguments_come_from_the_config():
    from config import augmentation_args, detection_args, detector_args, generator_args, loss_args

    config = build_config({"train": {"jitter": 0.1, "ignore_threshold": 0.5, "warmup_epochs": 2, "train_times": 3},
                           "valid": {"nms_threshold": 0.3, "max_detections": 50}})  # fmt: skip
    assert augmentation_args(config) == {"jitter": 0.1, "flip": True, "hue": 0.1, "saturation": 1.5, "exposure": 1.5}
    assert loss_args(config)["ignore_threshold"] == 0.5 and loss_args(config)["warmup_images"] == 12800
    assert loss_args(config, n_train_images=10)["warmup_images"] == 2 * 3 * 10  # keras-yolo2's warmup_epochs
    assert detection_args(config) == {"score_threshold": 0.3, "nms_threshold": 0.3, "max_detections": 50}
    assert detection_args(config, 0.005)["score_threshold"] == 0.005
    assert generator_args(config, "train")["augmentation"] == augmentation_args(config)
    assert generator_args(config, "valid")["augmentation"] is None and not generator_args(config, "valid")["shuffle"]
    assert detector_args(config)["labels"] == config["model"]["labels"]


def test_signature_defaults_are_the_configs():
    """Where a signature offers a default for a tunable (the Python API), it is the config's; the internal
    stages take theirs from config.py's consumer functions and offer none."""
    import inspect

    from augmentation import augment
    from batches import BatchGenerator
    from frontend import YOLO
    from loss import YoloLoss

    for name, parameter in inspect.signature(YOLO).parameters.items():
        if name in DEFAULTS["model"] and parameter.default is not inspect.Parameter.empty:
            expected = DEFAULTS["model"][name]
            assert parameter.default == expected or (parameter.default is None and expected == {}), name
    for name in ("score_threshold", "nms_threshold", "max_detections"):
        assert inspect.signature(YOLO.detect).parameters[name].default == DEFAULTS["valid"][name]
    tunables = {key for section in DEFAULTS.values() for key in section} | {"augmentation", "shuffle", "count_seen"}
    for function in (augment, YoloLoss, BatchGenerator):
        defaults = [name for name, p in inspect.signature(function).parameters.items() if p.default is not p.empty]
        assert not set(defaults) & tunables, function


def test_readme_variant_keys_are_aliases(capsys):
    raw = json.loads(json.dumps(KERAS_YOLO2))
    raw["model"]["architecture"] = raw["model"].pop("backend")
    raw["train"]["nb_epoch"] = raw["train"].pop("nb_epochs")
    config = build_config(raw)
    out = capsys.readouterr().out
    assert config["model"]["backend"] == "Full Yolo" and config["train"]["nb_epochs"] == 50
    assert "'model.architecture' is read as 'model.backend'" in out and "nb_epoch" in out


def test_shipped_configs_are_valid():
    for path in (
        "config.json",
        "configs/demo.json",
        "configs/scratch.json",
        "configs/voc0712.json",
        "configs/bench-voc-sample.json",
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_config(path)


def test_unknown_key_warns_with_suggestion():
    with pytest.warns(UserWarning, match="unknown key 'train.learning_rat'.*'learning_rate'"):
        build_config({"train": {"learning_rat": 0.1}})


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"input_size": 300}}, "multiple of 32"),
        ({"model": {"anchors": [1, 2, 3]}}, "anchors"),
        ({"model": {"labels": []}}, "labels"),
        ({"model": {"labels": ["a", "a"]}}, "duplicates"),
        ({"train": {"batch_size": 0}}, "batch_size"),
        ({"train": {"optimizer": "rmsprop"}}, "optimizer"),
        ({"valid": {"map_every": -1}}, "map_every"),
        ({"model": {"freeze_backend": "yes"}}, "freeze_backend must be true, false, a number"),
        ({"model": {"input_channels": 4}}, r"model.input_channels must be one of \(3, 1\)"),
        ({"model": {"head_layers": 1.5}}, "head_layers must be a whole number"),
        ({"model": {"head_filters": 0}}, "head_filters must be a positive whole number"),
        ({"valid": {"nms_threshold": 1.5}}, "nms_threshold must be a number from 0 to 1"),
        ({"train": {"ignore_thresh": 2}}, "ignore_threshold must be a number from 0 to 1"),
        ([], "top level"),
    ],
)
def test_bad_values_are_clear_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_invalid_json_names_the_place(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"model": {"backend": "Full Yolo",}}')
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON: line 1"):
        load_config(str(path))


def test_command_line_overrides_config():
    args = parse_args(["--epochs", "3", "--batch_size", "32", "--learning_rate", "0.01", "--input_size", "320",
                       "--backend", "Tiny Yolo", "--unfreeze"])  # fmt: skip
    config = apply_overrides(build_config({}), args)
    assert config["train"]["nb_epochs"] == 3 and config["train"]["batch_size"] == 32
    assert config["train"]["learning_rate"] == 0.01 and config["model"]["input_size"] == 320
    assert config["model"]["backend"] == "Tiny Yolo" and config["model"]["freeze_backend"] is False
    with pytest.raises(ConfigError, match="multiple of 32"):
        apply_overrides(build_config({}), parse_args(["--input_size", "100"]))
    assert DEFAULTS["train"]["nb_epochs"] == 50  # defaults untouched
