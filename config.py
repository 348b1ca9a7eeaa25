"""Configuration: defaults, keras-yolo2 compatibility, validation, command-line overrides.

The file format is keras-yolo2's: sections `model`, `train`, `valid` with its key
names. Keys this project adds follow the same snake_case style.
"""

import copy
import difflib
import json
import warnings

VOC_LABELS = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

# darknet's yolov2-voc.cfg anchors, in 13x13 grid units for a 416 input.
VOC_ANCHORS = [1.3221, 1.73145, 3.19275, 4.00944, 5.05587, 8.09892, 9.47112, 4.84053, 11.2364, 10.0071]

DEFAULTS = {
    "model": {
        "backend": "Full Yolo",
        "input_size": 416,
        "anchors": VOC_ANCHORS,
        "max_box_per_image": 30,
        "labels": VOC_LABELS,
        "freeze_backend": True,
        "backend_weights": "",
        "backend_options": {},
        # 1: gray images into a first layer made from the pretrained RGB kernel (backends.gray_first_layer)
        "input_channels": 3,
        # 3x3 conv-BN-leaky layers between backend and the 1x1 detection conv, trained from scratch
        "head_layers": 0,
        "head_filters": 256,
    },
    "train": {
        "voc_dir": "",
        "train_split": "train",
        "train_image_folder": "",
        "train_annot_folder": "",
        "demo_dataset": "",
        "train_times": 1,
        "pretrained_weights": "",
        "batch_size": 16,
        "learning_rate": 1e-4,
        "nb_epochs": 50,
        "warmup_epochs": None,
        "warmup_images": 12800,
        "object_scale": 5.0,
        "no_object_scale": 1.0,
        "coord_scale": 1.0,
        "class_scale": 1.0,
        "ignore_thresh": 0.6,
        "saved_weights_name": "",
        "optimizer": "adam",
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "lr_schedule": "cosine",
        "burn_in": 1000,
        "jitter": 0.3,
        "hue": 0.1,
        "saturation": 1.5,
        "exposure": 1.5,
        "flip": True,
        "early_stopping_patience": 0,
        # YAD2K-style fine-tuning of a frozen backend: unfrozen after this many epochs (0: never), lr x factor
        "unfreeze_after": 0,
        "unfreeze_learning_rate_factor": 0.1,
        "runs_dir": "runs",
        "run_name": "",
        "workers": 2,
        "seed": 0,
        "prediction_images": 8,
        "debug": False,
    },
    "valid": {
        "valid_image_folder": "",
        "valid_annot_folder": "",
        "valid_split": "val",
        "valid_times": 1,
        "score_threshold": 0.3,
        # validation mAP@0.5 every N epochs during training (0: never); best.weights.h5 is then the best by mAP
        "map_every": 5,
    },
}

# Variant spellings in keras-yolo2's README, accepted with a notice.
ALIASES = {("model", "architecture"): "backend", ("train", "nb_epoch"): "nb_epochs"}

CHOICES = {
    ("model", "input_channels"): (3, 1),
    ("train", "optimizer"): ("adam", "sgd"),
    ("train", "lr_schedule"): ("constant", "cosine", "steps"),
}

POSITIVE = [
    ("train", "batch_size"), ("train", "learning_rate"), ("train", "nb_epochs"), ("train", "train_times"),
    ("valid", "valid_times"), ("model", "max_box_per_image"), ("model", "head_filters"),
]  # fmt: skip


class ConfigError(ValueError):
    pass


def as_hw(input_size):
    """input_size is an int (square) or [height, width]; both multiples of 32."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
    return int(h), int(w)


def load_config(path):
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    return build_config(raw, source=path)


def build_config(raw, source="config"):
    """Merges `raw` over the defaults, translating aliases and checking values."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object with model/train/valid sections")
    config = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if section not in DEFAULTS:
            _unknown(source, section, None, DEFAULTS)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be an object")
        for key, value in values.items():
            if (section, key) in ALIASES:
                new = ALIASES[(section, key)]
                print(f"Note: {source}: '{section}.{key}' is read as '{section}.{new}'.")
                key = new
            if key not in DEFAULTS[section]:
                _unknown(source, key, section, DEFAULTS[section])
            config[section][key] = value
    validate(config, source)
    return config


def _unknown(source, key, section, known):
    close = difflib.get_close_matches(key, list(known), n=1)
    where = f"{section}.{key}" if section else key
    hint = f" Did you mean '{close[0]}'?" if close else ""
    warnings.warn(f"{source}: unknown key '{where}' is ignored.{hint}", stacklevel=3)


def validate(config, source="config"):
    model = config["model"]
    size = model["input_size"]
    sizes = [size] if isinstance(size, int) else size
    if not (
        isinstance(sizes, list)
        and len(sizes) == (1 if isinstance(size, int) else 2)
        and all(isinstance(s, int) and s > 0 and s % 32 == 0 for s in sizes)
    ):
        raise ConfigError(f"{source}: model.input_size must be a multiple of 32 (or [height, width]), got {size}")
    anchors = model["anchors"]
    if not anchors or len(anchors) % 2 or not all(isinstance(a, (int, float)) and a > 0 for a in anchors):
        raise ConfigError(f"{source}: model.anchors must be positive width, height pairs in grid units, got {anchors}")
    labels = model["labels"]
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ConfigError(f"{source}: model.labels must be a non-empty list of class names")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: model.labels has duplicates: {labels}")
    for section, key in POSITIVE:
        value = config[section][key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{source}: {section}.{key} must be a positive number, got {value!r}")
    freeze = model["freeze_backend"]
    if not (
        isinstance(freeze, bool)
        or (isinstance(freeze, int) and freeze >= 0)
        or (isinstance(freeze, list) and all(isinstance(p, str) for p in freeze))
    ):
        raise ConfigError(
            f"{source}: model.freeze_backend must be true, false, a number of layers, or a list of layer names "
            f'/ patterns (e.g. ["conv_1", "conv_2*"]), got {freeze!r}'
        )
    for section, key in (("valid", "map_every"), ("train", "unfreeze_after"), ("model", "head_layers")):
        value = config[section][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: {section}.{key} must be a whole number (0 turns it off), got {value!r}")
    for (section, key), allowed in CHOICES.items():
        if config[section][key] not in allowed:
            raise ConfigError(f"{source}: {section}.{key} must be one of {allowed}, got {config[section][key]!r}")


def apply_overrides(config, args):
    """Command-line flags win over the file. Returns a new, validated config."""
    config = copy.deepcopy(config)
    mapping = {
        "epochs": ("train", "nb_epochs"),
        "batch_size": ("train", "batch_size"),
        "learning_rate": ("train", "learning_rate"),
        "input_size": ("model", "input_size"),
        "backend": ("model", "backend"),
        "optimizer": ("train", "optimizer"),
        "workers": ("train", "workers"),
        "name": ("train", "run_name"),
        "pretrained_weights": ("train", "pretrained_weights"),
        "freeze_backend": ("model", "freeze_backend"),
    }
    for arg, (section, key) in mapping.items():
        value = getattr(args, arg, None)
        if value is not None:
            config[section][key] = value
    validate(config, "command line")
    return config


def save_config(config, path):
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
