"""Config validation: one check per kind of value, which kind each key is, the allowed choices, and the checks
of a model section (also run on the arguments given to YOLO()). config.py merges and validates through these."""

import math

from errors import UserError


class ConfigError(UserError):
    pass


# === Validation ===
# One check per kind of value; KINDS says which kind each key is. Keys not listed are free-form.


def _number(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


CHECKS = {
    "a positive whole number": lambda v: _whole(v) and v > 0,
    "a whole number (0 turns it off)": lambda v: _whole(v) and v >= 0,
    "a whole number of at least 0": lambda v: _whole(v) and v >= 0,
    'a whole number, or "auto"': lambda v: v == "auto" or (_whole(v) and v >= 0),
    'a positive whole number, or "auto"': lambda v: v == "auto" or (_whole(v) and v > 0),
    "a positive number": lambda v: _number(v) and v > 0,
    'a positive number, or "auto"': lambda v: v == "auto" or (_number(v) and v > 0),
    "a number of at least 0": lambda v: _number(v) and v >= 0,
    "a number from 0 to 1": lambda v: _number(v) and 0 <= v <= 1,
    "a number from 0 to below 1": lambda v: _number(v) and 0 <= v < 1,
    "a number from 0 to below 0.5 (the share of each side cropped or padded)": lambda v: _number(v) and 0 <= v < 0.5,
    "a number of at least 1": lambda v: _number(v) and v >= 1,
    "true or false": lambda v: isinstance(v, bool),
    "text or a list of text": lambda v: (
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(p, str) for p in v))
    ),
    "text (a path or name)": lambda v: isinstance(v, str),
    "non-empty text": lambda v: isinstance(v, str) and v.strip() != "",
    "a JSON object": lambda v: isinstance(v, dict),
    'devices: "auto", "cpu", GPU numbers "0,1", or a list of them': lambda v: (
        (isinstance(v, str) and v.strip() != "")
        or (isinstance(v, list) and v and all(isinstance(d, str) or _whole(d) for d in v))
    ),
    "[smallest, largest]: two multiples of 32, smallest first": lambda v: (
        isinstance(v, list) and len(v) == 2 and all(_whole(s) and s > 0 and s % 32 == 0 for s in v) and v[0] <= v[1]
    ),
}

KINDS = {
    "a positive whole number": [("model", "max_box_per_image"), ("model", "head_filters"), ("train", "batch_size"),
                              ("train", "nb_epochs"), ("train", "train_times"),
                              ("valid", "valid_times"), ("valid", "max_detections")],
    'a whole number, or "auto"': [("model", "head_layers")],
    'a positive whole number, or "auto"': [("train", "workers")],
    "a whole number (0 turns it off)": [("train", "unfreeze_after"), ("train", "burn_in"),
                                      ("train", "early_stopping_patience"), ("train", "checkpoint_every"),
                                      ("valid", "map_every")],
    "a whole number of at least 0": [("train", "prediction_images"), ("train", "warmup_images"), ("train", "seed")],
    'a positive number, or "auto"': [("train", "learning_rate")],
    "a positive number": [("train", "unfreeze_learning_rate_factor")],
    "a number of at least 0": [("train", "object_scale"), ("train", "no_object_scale"), ("train", "coord_scale"),
                             ("train", "class_scale"), ("train", "weight_decay")],
    "a number from 0 to below 1": [("train", "momentum")],
    "a number from 0 to below 0.5 (the share of each side cropped or padded)": [("train", "jitter")],
    "a number from 0 to 1": [("train", "ignore_threshold"), ("train", "hue"),
                           ("valid", "score_threshold"), ("valid", "nms_threshold")],
    "a number of at least 1": [("train", "saturation"), ("train", "exposure")],
    "true or false": [("train", "flip"), ("train", "download_data"), ("train", "cache_images"),
                      ("train", "multi_scale")],
    "[smallest, largest]: two multiples of 32, smallest first": [("train", "multi_scale_sizes")],
    "text or a list of text": [("train", "voc_dir"), ("valid", "valid_voc_dir")],
    "non-empty text": [("model", "backend"), ("train", "runs_dir")],
    "text (a path or name)": [("model", "backend_weights"), ("train", "train_split"),
             ("train", "train_image_folder"), ("train", "train_annot_folder"), ("train", "demo_dataset"), ("train", "dataset"),
             ("train", "pretrained_weights"), ("train", "saved_weights_name"), ("train", "run_name"), ("train", "cache_dir"),
             ("valid", "valid_image_folder"), ("valid", "valid_annot_folder"), ("valid", "valid_split"), ("valid", "dataset")],
    "a JSON object": [("model", "backend_options")],
    'devices: "auto", "cpu", GPU numbers "0,1", or a list of them': [("train", "devices")],
}  # fmt: skip

# Beyond these a value passes its kind's check but cannot be meant: it would allocate terabytes, start threads by
# the billion, overflow the loss or diverge at once, and fail late and obscurely instead of here.
MAXIMA = {
    ("model", "max_box_per_image"): 10_000, ("model", "head_layers"): 16, ("model", "head_filters"): 8192,
    ("train", "batch_size"): 65_536, ("train", "nb_epochs"): 100_000, ("train", "train_times"): 10_000,
    ("train", "workers"): 1024, ("train", "seed"): 2**32 - 1, ("train", "learning_rate"): 1.0,
    ("train", "unfreeze_learning_rate_factor"): 10.0, ("train", "weight_decay"): 1.0,
    ("train", "object_scale"): 1000.0, ("train", "no_object_scale"): 1000.0, ("train", "coord_scale"): 1000.0,
    ("train", "class_scale"): 1000.0, ("valid", "max_detections"): 100_000,
}  # fmt: skip
MAX_INPUT_SIDE = 4096

CHOICES = {
    ("model", "input_channels"): (3, 1),
    ("train", "optimizer"): ("adam", "sgd"),
    ("train", "precision"): ("float32", "mixed_bfloat16", "mixed_float16"),
    ("train", "loader"): ("auto", "processes", "threads"),
    ("train", "jit_compile"): ("auto", True, False),
    ("train", "run_eagerly"): (False, True),
    ("train", "sync_batchnorm"): (False, True),
    ("train", "lr_schedule"): ("constant", "cosine", "steps"),
}


def is_one_of(value, allowed):
    """`in`, but 0 and 1 are not False and True (nor 1.0 the 1 of input_channels)."""
    return any(value == a and type(value) is type(a) for a in allowed)


def as_hw(input_size, source="model.input_size"):
    """input_size is an int (square) or [height, width]; both positive multiples of 32."""
    sizes = [input_size] if _whole(input_size) else input_size
    if not (isinstance(sizes, list | tuple) and len(sizes) in (1, 2) and (len(sizes) == 1) == _whole(input_size)
            and all(_whole(s) and s > 0 and s % 32 == 0 for s in sizes)):  # fmt: skip
        raise ConfigError(f"{source} must be a positive multiple of 32 (or [height, width]), got {input_size!r}")
    if max(sizes) > MAX_INPUT_SIDE:
        raise ConfigError(f"{source} must be at most {MAX_INPUT_SIDE} a side, got {input_size!r}")
    return (int(sizes[0]), int(sizes[-1]))


def validate(config, source="config"):
    validate_model(config["model"], source)
    for kind, keys in KINDS.items():
        for section, key in keys:
            if section != "model" and not CHECKS[kind](config[section][key]):
                raise ConfigError(f"{source}: {section}.{key} must be {kind}, got {config[section][key]!r}")
    for (section, key), allowed in CHOICES.items():
        if section != "model" and not is_one_of(config[section][key], allowed):
            raise ConfigError(f"{source}: {section}.{key} must be one of {allowed}, got {config[section][key]!r}")
    check_maxima(config, source)
    if config["train"]["run_eagerly"] and config["train"]["jit_compile"] is True:
        raise ConfigError(f"{source}: train.run_eagerly runs the train step as Python, so it cannot be XLA-compiled "
                          "too: set train.jit_compile to \"auto\" or false")  # fmt: skip
    run_name = config["train"]["run_name"]
    if "/" in run_name or "\\" in run_name or run_name in (".", ".."):
        raise ConfigError(f"{source}: train.run_name must be a folder name inside train.runs_dir (no '/' or '..'), "
                          f"got {run_name!r}")  # fmt: skip
    warmup = config["train"]["warmup_epochs"]
    if warmup is not None and not (_number(warmup) and warmup >= 0):
        raise ConfigError(f"{source}: train.warmup_epochs must be a number of at least 0 (or absent), got {warmup!r}")


def check_maxima(config, source, sections=("train", "valid")):
    for (section, key), most in MAXIMA.items():
        value = config[section].get(key) if section in sections else None
        if _number(value) and value > most:
            raise ConfigError(f"{source}: {section}.{key} must be at most {most:g}, got {value!r}")


def validate_model(model, source="config"):
    """Checks the model keys present in `model`: a config's model section, or the arguments given to YOLO()."""

    def check(key, ok, expected):
        if key in model and not ok(model[key]):
            raise ConfigError(f"{source}: model.{key} must be {expected}, got {model[key]!r}")

    if "input_size" in model:
        as_hw(model["input_size"], f"{source}: model.input_size")
    check("anchors", lambda a: isinstance(a, list | tuple) and a and len(a) % 2 == 0
          and all(_number(v) and v > 0 for v in a), "positive width, height pairs in grid units")  # fmt: skip
    check("labels", lambda labels: isinstance(labels, list | tuple) and labels
          and all(isinstance(label, str) and label.strip() for label in labels), "a non-empty list of class names")  # fmt: skip
    if "labels" in model and len(set(model["labels"])) != len(model["labels"]):
        raise ConfigError(f"{source}: model.labels has duplicates: {model['labels']}")
    check("freeze_backend", lambda f: isinstance(f, bool) or (_whole(f) and f >= 0)
          or (isinstance(f, list) and all(isinstance(p, str) for p in f)),
          'true, false, a number of layers, or a list of layer names / patterns (e.g. ["conv_1", "conv_2*"])')  # fmt: skip
    for kind, keys in KINDS.items():
        for section, key in keys:
            if section == "model":
                check(key, CHECKS[kind], kind)
    for (section, key), allowed in CHOICES.items():
        if section == "model":
            check(key, lambda v, allowed=allowed: is_one_of(v, allowed), f"one of {allowed}")
    check_maxima({"model": model}, source, sections=("model",))
