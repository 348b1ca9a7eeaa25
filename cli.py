"""The command line's flags: every subcommand of main.py and what it reads from them."""

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, as every other user error is (its default prints the usage first)."""

    def error(self, message):
        print(f"\nError: {message} (python main.py --help lists them)", file=sys.stderr)
        sys.exit(2)


def loaders(value):
    """--workers: a positive whole number, or "auto"."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f'train.workers must be a positive whole number or "auto", got {value!r}')
    return number


def parse_args(argv):
    p = ArgumentParser(description="Train a YOLOv2 detector (settings in a keras-yolo2 style config.json).")
    p.add_argument(
        "command",
        nargs="?",
        default="train",
        choices=[
            "train",
            "anchors",
            "evaluate",
            "predict",
            "convert",
            "weights",
            "data",
            "backends",
            "bench",
            "export",
        ],
        help="what to do (default: train)",
    )
    p.add_argument("what", nargs="*", help="weights, data: 'download NAME' (or nothing, to list what is available)")
    p.add_argument(
        "-c", "--config", help="config file (default: config.json, or the run's own config.json beside -w weights)"
    )
    p.add_argument("--epochs", type=int, help="number of epochs (train.nb_epochs)")
    p.add_argument("--batch_size", type=int, help="images per batch (train.batch_size)")
    p.add_argument("--learning_rate", type=float, help="peak learning rate (train.learning_rate)")
    p.add_argument("--input_size", type=int, help="network input side, a multiple of 32 (model.input_size)")
    p.add_argument("--backend", help="backend name, e.g. 'Full Yolo', 'Tiny Yolo', SqueezeNet, MobileNet")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default) or darknet's sgd")
    p.add_argument(
        "--workers", type=loaders, help='training batch loaders (train.workers; "auto": one per core but one)'
    )
    p.add_argument("--loader", choices=["auto", "processes", "threads"], help="what the loaders are (train.loader)")
    p.add_argument("--devices", help='train on: "auto" (every GPU), "cpu", or GPUs such as 0,1 (train.devices)')
    p.add_argument("--name", help="run name: results go to runs/<name>")
    p.add_argument("--pretrained_weights", help="full detector weights to start from")
    freeze = p.add_mutually_exclusive_group()
    freeze.add_argument(
        "--unfreeze", dest="freeze_backend", action="store_false", default=None, help="train the backend too"
    )
    freeze.add_argument("--freeze", dest="freeze_backend", action="store_true", help="keep the backend frozen")
    p.add_argument("-n", "--num_anchors", type=int, help="anchors: how many (default: as many as the config has)")
    p.add_argument("--write", action="store_true", help="anchors: write them into the config file")
    p.add_argument("--resume", nargs="?", const="latest", help="resume a run folder (default: the latest run)")
    p.add_argument("--download", action="store_true", default=None,
                   help="fetch the configured PASCAL VOC folder(s) when missing (train.download_data)")  # fmt: skip
    p.add_argument("--multi_scale", action="store_true", default=None,
                   help="darknet's random=1: a new square input size every 10 batches (train.multi_scale)")  # fmt: skip
    use = p.add_argument_group("evaluate and predict")
    use.add_argument("-w", "--weights", help="detector weights (e.g. runs/demo/best.weights.h5)")
    use.add_argument(
        "--output",
        help="output folder (default: <run>/evaluation or <run>/predict beside the weights, else a new runs/ folder)",
    )
    use.add_argument("--score_threshold", "--threshold", type=float, help="score threshold (valid.score_threshold)")
    use.add_argument("--nms_threshold", "--nms", type=float, help="NMS IoU threshold (valid.nms_threshold)")
    use.add_argument("--metric", choices=["voc", "voc07"], default="voc", help="voc: all-point AP; voc07: 11-point")
    use.add_argument("--detections", help="evaluate: a detections JSON file from any model, instead of -w")
    use.add_argument("--annotations", help="evaluate --detections: the VOC Annotations folder or a COCO JSON")
    use.add_argument("--images", help="evaluate --detections: an image-set list (one id per line) or image folder")
    use.add_argument("-i", "--input", help="predict: image, folder of images, video file, or webcam index (0)")
    use.add_argument(
        "--json", nargs="?", const="", help="predict: write the detections as JSON (default: <output>/detections.json)"
    )
    use.add_argument("--max_frames", type=int, help="predict: stop a video or webcam after this many frames")
    use.add_argument(
        "--format", choices=["saved_model", "tflite", "onnx"], default="saved_model", help="export: format"
    )
    use.add_argument("--quantize", choices=["float32", "float16", "dynamic", "int8"], default="float32",
                     help="export --format tflite: the number type (int8: calibrated full-integer network)")  # fmt: skip
    use.add_argument("--int8", dest="quantize", action="store_const", const="int8", help="export: --quantize int8")
    use.add_argument(
        "--calibration", help="export --int8: a folder of calibration images (default: 100 training images)"
    )
    use.add_argument("--raw", action="store_true", help="export: the head output, without decoding and NMS")
    p.add_argument("--bench", action="store_true", help="backends: also measure forward images/s here")
    p.add_argument("--steps", type=int, default=10, help="bench: batches timed for each figure (default 10)")
    p.add_argument("--bookkeeping", action="store_true", help="bench: also time VOC-scale parsing and scoring")
    p.add_argument("--export", action="store_true", help="bench -w W: every export format's size, img/s and mAP")
    dark = p.add_argument_group("convert (darknet weights; --weights names the .weights file)")
    dark.add_argument("--cfg", help="darknet cfg the weights were trained with, e.g. yolov2-voc.cfg")
    dark.add_argument("--out", help="output folder (default: weights/; for data download: data/)")
    dark.add_argument("--labels", help="class names file (voc.names, coco.names); default: the config's labels")
    dark.add_argument(
        "--backend_only", action="store_true", help="write only the backend file (to train a new head for your labels)"
    )
    p.add_argument(
        "--verbose",
        type=int,
        default=1 if sys.stdout.isatty() else 2,
        choices=[0, 1, 2],
        help="Keras progress: 1 bar (default in a terminal), 2 a line per epoch (default otherwise), 0 none",
    )
    return p.parse_args(argv)
