"""Configuration: the one home of defaults and key names, keras-yolo2 compatibility, validation (its checks in
config_checks.py), command-line overrides, and one function per consumer that turns a config into its arguments.

The file format is keras-yolo2's: sections `model`, `train`, `valid` with its key names. Keys this
project adds follow the same snake_case style; thresholds are all `<what>_threshold`.
"""

import copy
import difflib
import json
import os
import warnings

from config_checks import ConfigError, validate

VOC_LABELS = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

# head_layers "auto" on an ImageNet classification backbone, and train.learning_rate "auto" on a frozen backend:
# the best of bench_heads.py's sweep (head layers 0-3 x lr 1e-4..3e-3, raccoon, 224 px, 30 epochs) for frozen
# MobileNet 0.25 (mAP@0.5 0.884; a 1x1 conv alone: 0.095) and SqueezeNet (0.976; alone: 0.110), and on BCCD for
# MobileNet 0.25 (0.383; alone: 0.035-0.124). Trained backends keep keras-yolo2's 1e-4 (not measured).
AUTO_HEAD_LAYERS = 3
FROZEN_LEARNING_RATE = 3e-3
UNFROZEN_LEARNING_RATE = 1e-4
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
        # "" = weights/<backend>_backend.h5 when present; "none" = random initialisation
        "backend_weights": "",
        "backend_options": {},
        # 1: gray images into a first layer made from the pretrained RGB kernel (backends.gray_first_layer)
        "input_channels": 3,
        # 3x3 conv-BN-leaky layers between backend and the 1x1 detection conv, trained from scratch; "auto": none
        # for darknet detectors' backends, AUTO_HEAD_LAYERS for ImageNet classification backbones
        "head_layers": "auto",
        "head_filters": 256,
    },
    "train": {
        # a VOCdevkit/VOC20xx folder, or a list of them (VOC2007 + VOC2012 trainval: configs/voc0712.json)
        "voc_dir": "",
        "train_split": "train",
        # fetch a missing VOC2012 / VOC2007 folder (main.py --download)
        "download_data": False,
        "train_image_folder": "",
        "train_annot_folder": "",
        # a YOLO data.yaml, a darknet obj.data or a COCO instances JSON (dataset_formats.py); its images in
        # train_image_folder when they are not where the format keeps them
        "dataset": "",
        "demo_dataset": "",
        "train_times": 1,
        "pretrained_weights": "",
        "batch_size": 16,
        # "auto": FROZEN_LEARNING_RATE on a frozen backend, UNFROZEN_LEARNING_RATE otherwise
        "learning_rate": "auto",
        "nb_epochs": 50,
        "warmup_epochs": None,
        # darknet's region layer pulls unassigned predictions to their anchors for this many images
        "warmup_images": 12800,
        "object_scale": 5.0,
        "no_object_scale": 1.0,
        "coord_scale": 1.0,
        "class_scale": 1.0,
        # darknet's `thresh`: predictions overlapping a true box more than this get no no-object penalty
        "ignore_threshold": 0.6,
        "saved_weights_name": "",
        "optimizer": "adam",
        # "mixed_bfloat16" / "mixed_float16": layers compute in 16 bits, weights, head output and loss in float32
        "precision": "float32",
        # XLA for the train step: "auto" is Keras' choice (on for JAX and TensorFlow on a GPU, off on a CPU)
        "jit_compile": "auto",
        # debugging: the train step runs as plain Python (prints and breakpoints work in the loss; slower)
        "run_eagerly": False,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "lr_schedule": "cosine",
        "burn_in": 1000,
        "jitter": 0.3,
        "hue": 0.1,
        "saturation": 1.5,
        "exposure": 1.5,
        "flip": True,
        # darknet's random=1: new square input sides within multi_scale_sizes (batch_maker.multi_scale_side)
        "multi_scale": False,
        "multi_scale_sizes": [320, 608],
        "early_stopping_patience": 0,
        # resume.h5 every this many batches too (0: at epoch ends only); a resumed run continues mid-epoch
        "checkpoint_every": 1000,
        # YAD2K-style fine-tuning of a frozen backend: unfrozen after this many epochs (0: never), lr x factor
        "unfreeze_after": 0,
        "unfreeze_learning_rate_factor": 0.1,
        "runs_dir": "runs",
        "run_name": "",
        # loaders making training batches ahead: "auto" is one per core but one (at least 2)
        "workers": "auto",
        # "processes" (no GIL between them: batch_processes.py), "threads", or "auto": processes from 3 loaders on
        "loader": "auto",
        # "auto": every GPU here (data-parallel; batch_size is the global batch), "cpu", or GPUs such as "0,1"
        "devices": "auto",
        # BatchNorm statistics over the global batch under tf.distribute (JAX's DataParallel always uses them)
        "sync_batchnorm": False,
        # decode every image once into a memory-mapped cache (image_cache.py) that later epochs and runs read
        "cache_images": True,
        "cache_dir": "",  # "": <runs_dir>/cache
        "seed": 0,
        "prediction_images": 8,
    },
    "valid": {
        "valid_image_folder": "",
        "valid_annot_folder": "",
        # VOC folder(s) to validate on ("": train.voc_dir's), image set valid_split
        "valid_voc_dir": "",
        "valid_split": "val",
        # another dataset file to validate on ("": the `val` split of train.dataset when it has one)
        "dataset": "",
        "valid_times": 1,
        # where the evaluation reports precision and recall, and predict's default
        "score_threshold": 0.3,
        # IoU above which a lower-scoring box of the same class is suppressed
        "nms_threshold": 0.45,
        "max_detections": 300,
        # validation mAP@0.5 every N epochs during training (0: never); best.weights.h5 is then the best by mAP
        "map_every": 5,
    },
}

# Other spellings (keras-yolo2's README variants, this project's earlier names), accepted with a notice.
ALIASES = {
    ("model", "architecture"): "backend",
    ("train", "nb_epoch"): "nb_epochs",
    ("train", "ignore_thresh"): "ignore_threshold",
}
# keras-yolo2 keys with no effect here, accepted with a notice so its configs run unchanged.
IGNORED = {("train", "debug"): "keras-yolo2's debug printing"}


def load_config(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a config file") from None
    return build_config(raw, source=path)


def build_config(raw, source="config"):
    """Merges `raw` over the defaults, translating aliases and checking values."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object with model/train/valid sections")
    config = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if section not in DEFAULTS:  # a misspelt section would drop every key in it: refused, not ignored
            close = difflib.get_close_matches(section, list(DEFAULTS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown section '{section}' (the sections are model, train, valid).{hint}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be an object")
        for key, value in values.items():
            if (section, key) in ALIASES:
                new = ALIASES[(section, key)]
                print(f"Note: {source}: '{section}.{key}' is read as '{section}.{new}'.")
                key = new
            if (section, key) in IGNORED:
                print(f"Note: {source}: '{section}.{key}' ({IGNORED[(section, key)]}) has no effect here.")
                continue
            if key not in DEFAULTS[section]:
                _unknown(source, key, section, DEFAULTS[section])
            config[section][key] = value
    validate(config, source)
    return config


def _unknown(source, key, section, known):
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    warnings.warn(f"{source}: unknown key '{section}.{key}' is ignored.{hint}", stacklevel=3)


def apply_overrides(config, args):
    """Command-line flags win over the file. Returns a new, validated config."""
    config = copy.deepcopy(config)
    for section, flags in FLAGS.items():
        for flag, key in flags.items():
            value = getattr(args, flag, None)
            if value is not None:
                config[section][key] = value
    validate(config, "command line")
    return config


# main.py's flags, by the section of the key each one sets: {section: {flag: key}}
FLAGS = {
    "model": {"input_size": "input_size", "backend": "backend", "freeze_backend": "freeze_backend"},
    "train": {"epochs": "nb_epochs", "batch_size": "batch_size", "learning_rate": "learning_rate",
              "optimizer": "optimizer", "workers": "workers", "loader": "loader", "devices": "devices", "name": "run_name",
              "pretrained_weights": "pretrained_weights", "download": "download_data", "multi_scale": "multi_scale"},
    "valid": {"score_threshold": "score_threshold", "nms_threshold": "nms_threshold"},
}  # fmt: skip


# === Arguments per consumer ===


def detector_args(config, n_train_images=None):
    """YOLO(**detector_args(config)): the detector the model section describes, with the loss's settings
    (`n_train_images` turns keras-yolo2's warmup_epochs into images)."""
    model = config["model"]
    return {
        "backend": model["backend"],
        "input_size": model["input_size"],
        "labels": model["labels"],
        "max_box_per_image": model["max_box_per_image"],
        "anchors": model["anchors"],
        "freeze_backend": model["freeze_backend"],
        "backend_weights": model["backend_weights"],
        "backend_options": model["backend_options"],
        "input_channels": model["input_channels"],
        "head_layers": model["head_layers"],
        "head_filters": model["head_filters"],
        "precision": config["train"]["precision"],
        "multi_scale": multi_scale_sizes(config),
        "loss_options": loss_args(config, n_train_images),
    }


def loss_args(config, n_train_images=None):
    """YoloLoss(anchors, **loss_args(config)). keras-yolo2's warmup_epochs, when set, is turned into images
    (it needs the training set's size)."""
    train = config["train"]
    warmup_images = train["warmup_images"]
    if train["warmup_epochs"] is not None and n_train_images is not None:
        warmup_images = int(train["warmup_epochs"] * train["train_times"] * n_train_images)
    return {
        "object_scale": train["object_scale"],
        "no_object_scale": train["no_object_scale"],
        "coord_scale": train["coord_scale"],
        "class_scale": train["class_scale"],
        "ignore_threshold": train["ignore_threshold"],
        "warmup_images": warmup_images,
    }


def augmentation_args(config):
    """augmentation.augment(..., **augmentation_args(config)): darknet's jitter, flip and HSV distortion."""
    return {key: config["train"][key] for key in ("jitter", "flip", "hue", "saturation", "exposure")}


def multi_scale_sizes(config):
    """(smallest, largest) square sides for multi-scale training, or None when it is off."""
    return tuple(config["train"]["multi_scale_sizes"]) if config["train"]["multi_scale"] else None


def loader_count(config):
    """train.workers as a number: "auto" is one loader per core this process may use, but one for the train step,
    and at least 2."""
    workers = config["train"]["workers"]
    if workers != "auto":
        return workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, cores - 1)


def use_processes(config):
    """train.loader as a choice: "auto" takes processes from 3 loaders on. On 2 cores processes and threads made
    batches at 0.86 - 1.26 of each other (bench), and processes take a few seconds to start; with more cores the
    GIL caps threads (about 40% of an image's time is Python between OpenCV's calls)."""
    loader = config["train"]["loader"]
    return loader == "processes" or (loader == "auto" and loader_count(config) >= 3)


def generator_args(config, split):
    """BatchGenerator(instances, layout, **generator_args(config, "train" | "valid")); validation batches are
    always at model.input_size."""
    train = config["train"]
    common = {"batch_size": train["batch_size"], "workers": loader_count(config), "seed": train["seed"]}
    if split == "train":
        return {**common, "times": train["train_times"], "augmentation": augmentation_args(config), "shuffle": True,
                "count_seen": True, "multi_scale": multi_scale_sizes(config), "epochs": train["nb_epochs"],
                "stream": True, "processes": use_processes(config)}  # fmt: skip
    return {**common, "times": config["valid"]["valid_times"], "augmentation": None, "shuffle": False,
            "count_seen": False, "multi_scale": None, "epochs": 1, "stream": False}  # fmt: skip


def detection_args(config, score_threshold=None):
    """YOLO.detect(images, **detection_args(config)); `score_threshold` overrides the config's (the AP floor)."""
    valid = config["valid"]
    return {
        "score_threshold": valid["score_threshold"] if score_threshold is None else score_threshold,
        "nms_threshold": valid["nms_threshold"],
        "max_detections": valid["max_detections"],
    }


def compile_args(config):
    """model.compile(optimizer=..., **compile_args(config))."""
    return {"jit_compile": config["train"]["jit_compile"], "run_eagerly": config["train"]["run_eagerly"]}


def optimizer_args(config):
    """optimizer.make_optimizer(total_steps, **optimizer_args(config))."""
    train = config["train"]
    keys = ("optimizer", "lr_schedule", "burn_in", "momentum", "weight_decay")
    return {**{key: train[key] for key in keys}, "learning_rate": learning_rate(config)}


def learning_rate(config):
    """train.learning_rate, with "auto" read as FROZEN_LEARNING_RATE for a frozen backend, else UNFROZEN."""
    if config["train"]["learning_rate"] != "auto":
        return config["train"]["learning_rate"]
    return FROZEN_LEARNING_RATE if config["model"]["freeze_backend"] is True else UNFROZEN_LEARNING_RATE
