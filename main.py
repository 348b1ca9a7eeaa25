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

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cli import parse_args  # noqa: E402  (after the logging environment, before TensorFlow)


def fail(message, code=2):
    print(f"\nError: {message}", file=sys.stderr)
    sys.exit(code)


def resolve_config(args):
    from config import DEFAULTS, FLAGS, apply_overrides, build_config, load_config
    from runs import latest_run_dir

    if args.command == "evaluate" and args.detections:  # scores a file: no detector, so no config file needed
        return apply_overrides(build_config({}), args), None
    if args.resume:
        changed = [f"--{flag}" for flags in FLAGS.values() for flag in flags if flag != "epochs"
                   and getattr(args, flag, None) is not None]  # fmt: skip
        if changed:
            fail(f"--resume continues a run as it was configured; only --epochs may change, not "
                 f"{', '.join(changed)} (start a new run for other settings)")  # fmt: skip
        run_dir = args.resume
        if run_dir == "latest":
            runs_dir = load_config(args.config)["train"]["runs_dir"] if os.path.exists(args.config) else None
            runs_dir = runs_dir or DEFAULTS["train"]["runs_dir"]
            run_dir = latest_run_dir(runs_dir)
            if run_dir is None:
                fail(f"--resume: no interrupted run (a folder with resume.h5) under {runs_dir}/")
        if not os.path.exists(os.path.join(run_dir, "config.json")):
            fail(f"--resume: {run_dir} is not a run folder (it has no config.json)")
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
    if args.json and os.path.isdir(args.json):
        fail(f"--json {args.json} is a folder: name the file to write (e.g. {os.path.join(args.json, 'dets.json')})")
    yolo = load_detector(args, config)
    out = output_dir(args, config, "predict")
    json_path = (args.json or os.path.join(out, "detections.json")) if args.json is not None else None
    if json_path and os.path.dirname(json_path):
        os.makedirs(os.path.dirname(json_path), exist_ok=True)
    threshold = None if args.score_threshold is not None else best_f1_threshold(args.weights)
    return run_prediction(yolo, args.input, out, detection_args(config, threshold), json_path, args.max_frames)


def best_f1_threshold(weights):
    """The score threshold with the best mean F1 on the validation set of the run `weights` come from (its
    results.json), which predict uses unless --score_threshold is given; None without one."""
    run_dir = weights_run_dir(weights)
    if run_dir is None:
        return None
    try:
        with open(os.path.join(run_dir, "results.json")) as f:
            best = json.load(f)["best_f1"]
    except (OSError, ValueError, KeyError):
        return None
    if not best.get("f1"):
        return None
    print(f"Score threshold {best['threshold']:.2f}: the best mean F1 ({best['f1']:.3f}) on this run's validation set "
          f"({os.path.join(run_dir, 'results.json')}); --score_threshold sets another.")  # fmt: skip
    return best["threshold"]


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
        if args.command in ("evaluate", "predict", "data") and args.output and os.path.isfile(args.output):
            fail(f"--output {args.output} is a file: name a folder (it is created when missing)")
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
    from console import catch_interrupts, exit_interrupted, interrupted, one_line_warnings, quiet_native_logs

    quiet_native_logs()
    one_line_warnings()
    catch_interrupts()
    try:
        main()
    except SystemExit as stop:
        if stop.code == 130:  # an interrupted run, its message printed
            exit_interrupted()
        raise
    # A Ctrl-C before training started (importing, parsing): nothing to save, no traceback. Inside a C extension's
    # import it surfaces as that import's error.
    except (KeyboardInterrupt, Exception):
        if not interrupted():
            raise
        print("\nInterrupted.", file=sys.stderr)
        exit_interrupted()
