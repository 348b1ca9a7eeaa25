"""YOLOv2 trainer.

python main.py --epochs 50 --batch_size 32          # train with config.json
python main.py --config configs/demo.json           # the embedded demo (a few minutes on a CPU)
python main.py --resume [runs/NAME]                 # continue an interrupted run
python main.py anchors -n 5 [--write]               # k-means anchors for the config's training boxes
python main.py evaluate -w runs/demo/best.weights.h5 # per-class AP table, results.json, PR curves
python main.py evaluate --detections dets.json --annotations VOC2012/Annotations [--images val.txt]
python main.py predict -w W -i photo.jpg|folder|video.mp4|0 [--json dets.json]
python main.py convert --cfg yolov2-voc.cfg --weights yolov2-voc.weights  # darknet -> weights/
python main.py weights download yolov2-voc          # fetch darknet's weights and convert them
python main.py data download voc2012                # fetch and unpack PASCAL VOC2012 into data/VOCdevkit/
python main.py data check                           # classes, boxes, anchor fit, skipped files; labels.png
python main.py backends [--bench]                   # parameters, GFLOPs, grid, weights, speed of each backend
python main.py bench [--steps 10] [--bookkeeping]   # img/s of the pipeline, train step, fit, inference; FLOPs
python main.py bench --export -w W                  # each export format: write time, size, img/s, mAP
python main.py export -w W --format saved_model|tflite|onnx [--int8] [--raw]  # decoding + NMS inside, checked
python main.py predict -w runs/demo/best.onnx -i ... # exported files predict and evaluate too (no Keras model)
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train a YOLOv2 detector (settings in a keras-yolo2 style config.json).")
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
    p.add_argument("--workers", type=int, help="data loading threads")
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


def fail(message, code=2):
    print(f"\nError: {message}", file=sys.stderr)
    sys.exit(code)


def resolve_config(args):
    from config import DEFAULTS, apply_overrides, build_config, load_config
    from runs import latest_run_dir

    if args.command == "evaluate" and args.detections:  # scores a file: no detector, so no config file needed
        return apply_overrides(build_config({}), args), None
    if args.resume:
        run_dir = args.resume
        if run_dir == "latest":
            runs_dir = load_config(args.config)["train"]["runs_dir"] if os.path.exists(args.config) else None
            runs_dir = runs_dir or DEFAULTS["train"]["runs_dir"]
            run_dir = latest_run_dir(runs_dir)
            if run_dir is None:
                fail(f"--resume: no interrupted run (a folder with resume.h5) under {runs_dir}/")
        if not os.path.exists(os.path.join(run_dir, "resume.h5")):
            fail(f"--resume: {run_dir} has no resume.h5 (it finished no epoch, or is not a run folder)")
        config = load_config(os.path.join(run_dir, "config.json"))
        if args.epochs:  # the one setting a resumed run may change: train longer
            config["train"]["nb_epochs"] = args.epochs
        return config, run_dir
    return apply_overrides(load_config(args.config), args), None


def weights_run_dir(weights):
    """The run folder holding `weights` (it has the config.json the run was trained with), or None."""
    folder = os.path.dirname(os.path.abspath(weights))
    return folder if os.path.exists(os.path.join(folder, "config.json")) else None


def output_dir(args, config, name):
    from runs import new_run_dir

    if args.output:
        return args.output
    run_dir = weights_run_dir(args.weights) if args.weights else None
    if run_dir:
        return os.path.join(run_dir, name)
    return new_run_dir(config["train"]["runs_dir"], name)


def load_detector(args, config):
    from deployed import is_exported, load
    from frontend import YOLO

    if not args.weights:
        fail(f"{args.command} needs detector weights: -w runs/<run>/best.weights.h5")
    if is_exported(args.weights):  # runs in its own runtime, no Keras model
        if args.command == "export":
            fail(f"{args.weights} is an exported model already: export from detector weights (.weights.h5)")
        return load(args.weights)
    yolo = YOLO.from_config(config, load_pretrained=False, weights=args.weights)
    yolo.load_weights(args.weights)
    return yolo


def evaluate_command(args, config):
    from evaluate import evaluate_file, evaluate_model

    if args.detections:
        if not args.annotations:
            fail("evaluate --detections also needs --annotations <VOC Annotations folder or COCO instances JSON>")
        out = output_dir(args, config, "evaluation")
        threshold = config["valid"]["score_threshold"]
        return evaluate_file(args.detections, args.annotations, args.images, out, args.metric, threshold)
    if not args.weights:
        fail("evaluate needs -w <detector weights> (or --detections <file> --annotations <folder>)")
    yolo = load_detector(args, config)
    if yolo.labels != config["model"]["labels"]:
        fail(f"{args.weights} detects {yolo.labels}; the config ({args.config}) has {config['model']['labels']}")
    return evaluate_model(yolo, config, output_dir(args, config, "evaluation"), args.metric)


def predict_command(args, config):
    from config import detection_args
    from predict import run_prediction

    if not args.input:
        fail("predict needs -i <image, folder, video file or webcam index>")
    yolo = load_detector(args, config)
    out = output_dir(args, config, "predict")
    json_path = (args.json or os.path.join(out, "detections.json")) if args.json is not None else None
    return run_prediction(yolo, args.input, out, detection_args(config), json_path, args.max_frames)


def export_command(args, config):
    """The detector with decoding and NMS in the graph, checked against the Keras graph once written."""
    from export import run_export

    return run_export(load_detector(args, config), config, args.weights, args.format, args.quantize, args.output,
                      args.raw, args.calibration)  # fmt: skip


def anchors_command(args, config):
    """k-means anchors on the training boxes, in grid units of the configured input size."""
    from anchors import find_anchors, instance_shapes, to_grid_units
    from config_checks import as_hw
    from datasets import load_datasets

    train_set, _, _ = load_datasets(config)
    shapes = instance_shapes(train_set)
    k = args.num_anchors or len(config["model"]["anchors"]) // 2
    anchors, iou = find_anchors(shapes, k)
    h, w = as_hw(config["model"]["input_size"])
    values = to_grid_units(anchors, (h // 32, w // 32))
    print(f"{k} anchors for {w}x{h} input ({w // 32}x{h // 32} grid), from {len(shapes)} boxes:")
    print(json.dumps(values))
    print(f"average IoU with the best anchor: {iou:.4f}")
    if args.write:
        from anchors import write_anchors

        print(f"Written to {args.config} (model.anchors; {write_anchors(args.config, values)}).")
    return {"anchors": values, "average_iou": iou}


def convert_command(args, config):
    from darknet import convert

    if not (args.cfg and args.weights):
        fail("convert needs --cfg <darknet cfg> and --weights <darknet .weights file>")
    labels = None if args.backend_only else config["model"]["labels"]
    if args.labels and not args.backend_only:
        with open(args.labels) as f:
            labels = [line.strip() for line in f if line.strip()]
    result = convert(args.cfg, args.weights, args.out, labels=labels, backend_only=args.backend_only)
    h = result["header"]
    print(f"{args.weights}: darknet {h['major']}.{h['minor']}.{h['revision']}, seen {h['seen']:,} images")
    print(f"Converted {len(result['layers'])} convolutional layers ({result['layers'][0]} ... {result['layers'][-1]}).")
    if result["missing"]:
        print(
            f"Not in the file, left as initialised (they train even in a frozen backend): {', '.join(result['missing'])}"
        )
    print(f"Backend weights: {result['backend']}")
    if result["detector"]:
        print(
            f"Detector weights: {result['detector']}\nIts config (backend, input size, anchors, labels): {result['config']}"
        )
        print(f"Try: python main.py predict -c {result['config']} -w {result['detector']} -i <image>")
    return result


def download_name(args):
    """NAME of `weights download NAME` / `data download NAME`."""
    if len(args.what) != 2 or args.what[0] != "download":
        fail(f"{args.command}: expected 'download NAME', got {' '.join(args.what)!r}")
    return args.what[1]


def weights_command(args, config):
    from downloads import BACKBONE_WEIGHTS, DARKNET_WEIGHTS, fetch_backbone, fetch_darknet

    if not args.what:
        print("Weights (python main.py weights download NAME): darknet's, converted, and ImageNet backbones")
        for name, entry in {**DARKNET_WEIGHTS, **BACKBONE_WEIGHTS}.items():
            print(f"  {name:<24}{entry.get('weights') or entry['url']}")
        present = sorted(f for f in os.listdir(args.out) if f.endswith(".h5")) if os.path.isdir(args.out) else []
        print(f"In {args.out}/: {', '.join(present) or 'nothing yet'}")
        return {**DARKNET_WEIGHTS, **BACKBONE_WEIGHTS}
    if download_name(args) in BACKBONE_WEIGHTS:
        path, keys = fetch_backbone(download_name(args), args.out)
        print(f'Backend weights: {path}\nIn the config\'s model section: {keys}, "backend_weights": "{path}"')
        return path
    result = fetch_darknet(download_name(args), args.out)
    print(f"Backend weights: {result['backend']}")
    if result["detector"]:
        print(f"Detector weights: {result['detector']} (config: {result['config']})")
    return result


def data_command(args, config):
    """`data download voc2012|voc2007 [--out DIR]`: the archives (resumable, md5-checked) unpacked into DIR;
    `data check`: what the configured data holds (data_check.py)."""
    from downloads import VOC_DATASETS, fetch_voc

    if args.what == ["check"]:
        from data_check import check_data

        return check_data(config, args.output or os.path.join(config["train"]["runs_dir"], "data_check"))
    if not args.what:
        print("Datasets (python main.py data download NAME [--out data]):")
        for name, entry in VOC_DATASETS.items():
            print(f"  {name:<10}{entry['size']:>12}  " + ", ".join(url for url, _ in entry["archives"]))
        return VOC_DATASETS
    voc_dir = fetch_voc(download_name(args), args.out)
    print(f"PASCAL VOC in {voc_dir}: set train.voc_dir to it (config.json's default is data/VOCdevkit/VOC2012).")
    return voc_dir


def bench_command(args, config):
    """The config's detector on its training images: pipeline, train step, fit, inference (see bench.py)."""
    import keras

    from bench import bookkeeping, format_bench, run_bench, write_bench
    from datasets import load_datasets
    from frontend import YOLO

    if args.steps < 1:
        fail(f"--steps must be at least 1, got {args.steps}")
    if args.export:
        from bench_export import format_export_bench, run_export_bench, write_export_bench

        out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.weights or ".")), "export_bench")
        result = run_export_bench(load_detector(args, config), config, args.weights, out, repeats=args.steps)
        print(format_export_bench(result))
        print(f"Files in {out}; figures in {write_export_bench(result, os.path.join(out, 'export_bench.json'))}")
        return result
    if config["train"]["multi_scale"]:
        print(f"Note: bench measures at model.input_size {config['model']['input_size']}; train.multi_scale is off "
              "for it (try each size with --input_size).")  # fmt: skip
        config = {**config, "train": {**config["train"], "multi_scale": False}}
    train_set, _, _ = load_datasets(config)
    keras.utils.set_random_seed(config["train"]["seed"])
    yolo = YOLO.from_config(config, n_train_images=len(train_set))
    result = run_bench(yolo, config, train_set, steps=args.steps)
    if args.bookkeeping:
        result["bookkeeping"] = bookkeeping()
    print(format_bench(result))
    path = write_bench(result, args.output or os.path.join(config["train"]["runs_dir"], "bench.json"))
    print(f"Written to {path}")
    return result


def backends_command(args, config):
    from backends.report import backend_rows, format_rows, read_speeds
    from config_checks import as_hw
    from weight_files import atomic_write

    input_hw, channels = as_hw(config["model"]["input_size"]), config["model"]["input_channels"]
    speeds_file = os.path.join(config["train"]["runs_dir"], "backend_speeds.json")
    speeds = read_speeds(speeds_file)
    rows = backend_rows(input_hw, channels, bench=args.bench, speeds=speeds)
    print(format_rows(rows, input_hw, channels))
    if args.bench:
        os.makedirs(config["train"]["runs_dir"], exist_ok=True)
        with atomic_write(speeds_file) as tmp, open(tmp, "w") as f:
            json.dump(speeds, f, indent=1, sort_keys=True)
        print(f"Speeds (forward pass, batch 8, this machine) stored in {speeds_file}")
    else:
        print("img/s: python main.py backends --bench measures the forward pass (batch 8) on this machine")
    return rows


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.out is None:  # weights and darknet conversions go to weights/, datasets to data/
        args.out = "data" if args.command == "data" else "weights"
    from errors import UserError
    from training import run_training

    try:
        if args.config is None:
            # evaluate / predict on a run's weights default to the config that run was trained with
            run_dir = weights_run_dir(args.weights) if args.weights and args.command != "train" else None
            args.config = os.path.join(run_dir, "config.json") if run_dir else "config.json"
        if args.what and args.command not in ("weights", "data"):
            fail(f"unexpected argument(s) {' '.join(args.what)!r} for {args.command}")
        config, run_dir = resolve_config(args)
        commands = {"anchors": anchors_command, "evaluate": evaluate_command, "predict": predict_command,
                    "convert": convert_command, "weights": weights_command, "data": data_command,
                    "backends": backends_command, "bench": bench_command, "export": export_command}  # fmt: skip
        if args.command in commands:
            return commands[args.command](args, config)
        return run_training(config, run_dir, verbose=args.verbose)
    except UserError as e:
        fail(str(e), e.exit_code)


if __name__ == "__main__":
    from console import quiet_native_logs

    quiet_native_logs()
    main()
