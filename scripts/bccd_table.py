"""The README's "Training from scratch" table: frozen ImageNet backbones against backbones trained from random
weights on BCCD, one `main.py` run per row (bench_heads.run_one), 30 epochs each.

    python scripts/bccd_table.py [--rows 3 4] [--data ../shared/data/bccd] [--out runs/bccd_table]

Every row shares bench_heads.base_config (the dataset's seeded 80/20 split, 5 k-means anchors of the training
boxes, batch 16, 320 px); the from-scratch rows add configs/scratch.json's recipe. Finished rows are kept in
<out>/bccd_table.json, so an interrupted table continues where it stopped; the markdown table is printed at the end.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_heads import base_config, run_one  # noqa: E402  (the project's modules, from the repository root)

SHARED_WEIGHTS = os.path.join(os.path.dirname(ROOT), "shared", "weights")
MOBILENET = {"backend": "MobileNet", "backend_options": {"alpha": 0.25},
             "weights": os.path.join(SHARED_WEIGHTS, "mobilenet_2_5_224_tf_no_top.h5")}  # fmt: skip
SQUEEZENET = {"backend": "SqueezeNet",
              "weights": os.path.join(SHARED_WEIGHTS, "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5")}  # fmt: skip
SCRATCH_KEYS = (
    "optimizer",
    "lr_schedule",
    "burn_in",
    "warmup_epochs",
    "jitter",
    "hue",
    "saturation",
    "exposure",
    "flip",
)

# (name, backbone, from scratch, freeze_backend, unfreeze_after, head_layers, learning rate)
ROWS = [
    ("Tiny Yolo", {"backend": "Tiny Yolo"}, True, False, 0, 0, 1e-3),
    ("MobileNet 0.25", MOBILENET, True, False, 0, 0, 1e-3),
    ("MobileNet 0.25", MOBILENET, False, True, 0, 0, 1e-4),
    ("MobileNet 0.25", MOBILENET, False, True, 0, 0, 1e-3),
    ("MobileNet 0.25", MOBILENET, False, True, 10, 0, 1e-4),
    ("MobileNet 0.25", MOBILENET, False, True, 0, 2, 1e-4),
    ("MobileNet 0.25", MOBILENET, False, True, 0, 2, 1e-3),
    ("SqueezeNet v1.1", SQUEEZENET, False, True, 0, 0, 1e-4),
    ("SqueezeNet v1.1", SQUEEZENET, False, True, 0, 2, 1e-4),
    ("SqueezeNet v1.1", SQUEEZENET, False, True, 0, 2, 1e-3),
]


def row_config(data, out, row):
    name, backbone, scratch, freeze, unfreeze_after, head_layers, lr = row
    args = argparse.Namespace(data=data, labels=["RBC", "WBC", "Platelets"], backend=backbone["backend"],
                              weights=backbone.get("weights", "none"), alpha=None, input_size=320, epochs=30,
                              batch_size=16, out=out, seed=0)  # fmt: skip
    config = base_config(args)
    model, train = config["model"], config["train"]
    model.update(freeze_backend=freeze, head_layers=head_layers, backend_options=backbone.get("backend_options", {}))
    train.update(learning_rate=lr, unfreeze_after=unfreeze_after, unfreeze_learning_rate_factor=0.1)
    if scratch:
        model["backend_weights"] = "none"
        with open(os.path.join(ROOT, "configs", "scratch.json")) as f:
            recipe = json.load(f)["train"]
        train.update({key: recipe[key] for key in SCRATCH_KEYS})
    return config


def describe(row):
    name, _, scratch, freeze, unfreeze_after, head_layers, lr = row
    weights = "none (`configs/scratch.json` recipe)" if scratch else "ImageNet"
    backend = f"frozen {unfreeze_after} epochs, then trained" if unfreeze_after else "frozen" if freeze else "trained"
    rate = f"{lr:g}, then {lr * 0.1:g}" if unfreeze_after else f"{lr:g}"
    return name, weights, backend, f"`head_layers: {head_layers}`" if head_layers else "1x1", rate


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "bccd"))
    p.add_argument("--rows", type=int, nargs="+", help="row numbers (1-based; default all)")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bccd_table"))
    args = p.parse_args()
    results_path = os.path.join(args.out, "bccd_table.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for k in args.rows or range(1, len(ROWS) + 1):
        if str(k) in results:
            continue
        mAP, wall = run_one(row_config(args.data, args.out, ROWS[k - 1]), f"row{k}", args.out)
        results[str(k)] = {"map": mAP, "wall_s": wall}
        os.makedirs(args.out, exist_ok=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"row {k} ({', '.join(describe(ROWS[k - 1]))}): mAP@0.5 {mAP:.3f}, {wall / 60:.1f} min", flush=True)
    print("| backbone | weights | backend | head | lr | mAP@0.5 | wall |\n| --- | --- | --- | --- | --- | --- | --- |")
    for k, row in enumerate(ROWS, 1):
        if str(k) in results:
            r = results[str(k)]
            print("| " + " | ".join(describe(row)) + f" | {r['map']:.3f} | {r['wall_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
