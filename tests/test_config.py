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


def test_readme_variant_keys_are_aliases(capsys):
    raw = json.loads(json.dumps(KERAS_YOLO2))
    raw["model"]["architecture"] = raw["model"].pop("backend")
    raw["train"]["nb_epoch"] = raw["train"].pop("nb_epochs")
    config = build_config(raw)
    out = capsys.readouterr().out
    assert config["model"]["backend"] == "Full Yolo" and config["train"]["nb_epochs"] == 50
    assert "'model.architecture' is read as 'model.backend'" in out and "nb_epoch" in out


def test_shipped_configs_are_valid():
    for path in ("config.json", "configs/demo.json"):
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
        ({"model": {"head_filters": 0}}, "head_filters must be a positive number"),
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
