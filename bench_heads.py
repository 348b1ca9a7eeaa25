"""Which head and learning rate learn on a frozen pretrained backbone: a grid of training runs on one dataset.

    python bench_heads.py --data ../shared/data/raccoon --labels raccoon --backend MobileNet \
        --weights ../shared/weights/mobilenet_2_5_224_tf_no_top.h5 --alpha 0.25 --input_size 224

Each run is `main.py` in its own process on the dataset's seeded 80/20 split (folder pair images/ +
annotations/), frozen backbone, 5 k-means anchors of the training boxes, `--epochs` epochs; its figure is the
validation mAP@0.5 of the best checkpoint (results.json). Every finished run is appended to the JSON file at
once, so an interrupted sweep keeps what it measured and continues where it stopped.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

from anchors import find_anchors, instance_shapes, to_grid_units
from datasets import split_train_valid
from preprocessing import parse_annotation

ROOT = os.path.dirname(os.path.abspath(__file__))
HEAD_LAYERS = (0, 1, 2, 3)
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a folder with images/ and annotations/ (VOC XML)")
    p.add_argument("--labels", nargs="+", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--weights", required=True, help="the backend's pretrained weights file")
    p.add_argument("--alpha", type=float, help="MobileNet width")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--head_layers", type=int, nargs="+", default=HEAD_LAYERS)
    p.add_argument("--learning_rates", type=float, nargs="+", default=LEARNING_RATES)
    p.add_argument("--out", default="runs/bench_heads", help="run folders and the sweep's JSON")
    p.add_argument("--defaults", action="store_true",
                   help="instead of the grid: one run with head_layers and learning_rate left to their defaults")  # fmt: skip
    p.add_argument("--unfreeze_after", type=int, default=0, help="--defaults: unfreeze the backbone after N epochs")
    p.add_argument("--unfreeze_factor", type=float, default=0.1, help="--unfreeze_after: the learning-rate factor")
    p.add_argument("--warmup_images", type=int, help="--defaults: train.warmup_images (default: darknet's 12,800)")
    p.add_argument("--seed", type=int, default=0, help="train.seed: the 80/20 split, and so the anchors, follow it")
    return p.parse_args(argv)


def base_config(args):
    images, annotations = os.path.join(args.data, "images"), os.path.join(args.data, "annotations")
    instances, _ = parse_annotation(annotations, images, args.labels)
    train, _ = split_train_valid(instances, seed=args.seed)  # main.py's split: anchors from its training part only
    grid = args.input_size // 32
    anchors = to_grid_units(find_anchors(instance_shapes(train), 5)[0], (grid, grid))
    model = {"backend": args.backend, "backend_weights": os.path.abspath(args.weights), "input_size": args.input_size,
             "labels": args.labels, "anchors": anchors, "freeze_backend": True}  # fmt: skip
    if args.alpha:
        model["backend_options"] = {"alpha": args.alpha}
    train_keys = {"train_image_folder": os.path.abspath(images), "train_annot_folder": os.path.abspath(annotations),
                  "nb_epochs": args.epochs, "batch_size": args.batch_size, "runs_dir": os.path.abspath(args.out),
                  "prediction_images": 0, "seed": args.seed}  # fmt: skip
    return {"model": model, "train": train_keys, "valid": {}}


def run_one(config, name, out):
    """One training run in a fresh process -> (mAP@0.5 of its best checkpoint, wall seconds)."""
    os.makedirs(out, exist_ok=True)
    config["train"]["run_name"] = name
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    start = time.time()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "-c", path, "--verbose", "0"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    run_dir = max((d for d in os.listdir(out) if d.startswith(name) and os.path.isdir(os.path.join(out, d))),
                  key=lambda d: os.path.getmtime(os.path.join(out, d)))  # fmt: skip
    with open(os.path.join(out, run_dir, "results.json")) as f:
        return json.load(f)["map"], time.time() - start


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = base_config(args)
    tag = f"{os.path.basename(os.path.normpath(args.data))}_{args.backend.replace(' ', '_')}_{args.input_size}"
    if args.defaults:
        return run_defaults(config, tag, args)
    results_path = os.path.join(args.out, f"{tag}.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else []
    done = {(r["head_layers"], r["learning_rate"]) for r in results}
    for head_layers, lr in itertools.product(args.head_layers, args.learning_rates):
        if (head_layers, lr) in done:
            continue
        run = json.loads(json.dumps(config))
        run["model"]["head_layers"], run["train"]["learning_rate"] = head_layers, lr
        map50, wall = run_one(run, f"{tag}_h{head_layers}_lr{lr:g}", args.out)
        results.append({"head_layers": head_layers, "learning_rate": lr, "map": map50, "wall_s": wall})
        os.makedirs(args.out, exist_ok=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"{tag}: head_layers {head_layers}, lr {lr:g}: mAP@0.5 {map50:.4f} ({wall / 60:.1f} min)", flush=True)
    print(format_sweep(results, tag))


def run_defaults(config, tag, args):
    """The same run with head_layers and learning_rate left out (their "auto" defaults), compared with the sweep's
    best cell when the sweep's JSON is there."""
    config["train"].update(unfreeze_after=args.unfreeze_after, unfreeze_learning_rate_factor=args.unfreeze_factor)
    name = f"{tag}_defaults_{args.epochs}ep"
    if args.unfreeze_after:
        name += f"_unfreeze{args.unfreeze_after}_x{args.unfreeze_factor:g}"
    if args.warmup_images is not None:
        config["train"]["warmup_images"] = args.warmup_images
        name += f"_warmup{args.warmup_images}"
    if args.seed:
        name += f"_seed{args.seed}"
    map50, wall = run_one(config, name, args.out)
    line = f"{name}: mAP@0.5 {map50:.4f} ({wall / 60:.1f} min)"
    sweep_path = os.path.join(args.out, f"{tag}.json")
    if os.path.exists(sweep_path):
        with open(sweep_path) as f:
            best = max(json.load(f), key=lambda r: r["map"])
        line += (f"; the sweep's best (head_layers {best['head_layers']}, lr {best['learning_rate']:g}) "
                 f"{best['map']:.4f}: x{map50 / best['map']:.3f}")  # fmt: skip
    print(line)
    return map50


def format_sweep(results, tag):
    rates = sorted({r["learning_rate"] for r in results})
    best = max(results, key=lambda r: r["map"])
    lines = [f"{tag}: validation mAP@0.5 (best checkpoint); rows head_layers, columns learning rate",
             "head | " + " | ".join(f"{lr:g}" for lr in rates)]  # fmt: skip
    for head in sorted({r["head_layers"] for r in results}):
        cells = {r["learning_rate"]: r["map"] for r in results if r["head_layers"] == head}
        lines.append(f"{head} | " + " | ".join(f"{cells[lr]:.3f}" if lr in cells else "-" for lr in rates))
    lines.append(f"best: head_layers {best['head_layers']}, lr {best['learning_rate']:g}: {best['map']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
