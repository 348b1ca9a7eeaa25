"""`python main.py data check`: what the configured training and validation data hold, before training on it.

Per split: images, objects per class, objects per image, images without objects, box sizes at the network input
and how well the configured anchors cover them (average IoU of each box with its best anchor, by shape, as
bias_match assigns them), and every skipped or repaired file with its reason. `labels.png` draws the class
histogram, a heat map of box centres and the box widths and heights with the anchors on them. Training prints
the short form (`short_summary`).
"""

import os

import numpy as np

from anchors import instance_shapes
from utils import shape_iou


def summarize(instances, labels, input_hw, anchors):
    """-> the figures of one split (see the module docstring); box sizes in pixels of the network input."""
    counts = {label: 0 for label in labels}
    per_image = [len(i["object"]) for i in instances]
    for instance in instances:
        for o in instance["object"]:
            counts[o["name"]] = counts.get(o["name"], 0) + 1
    shapes = instance_shapes(instances) * [input_hw[1], input_hw[0]]  # widths and heights in input pixels
    grid_anchors = np.asarray(anchors, np.float64).reshape(-1, 2) * 32  # grid cells are 32 input pixels
    coverage = float(np.max(shape_iou(shapes, grid_anchors), axis=1).mean()) if len(shapes) else float("nan")
    sides = np.sqrt(np.prod(shapes, axis=1)) if len(shapes) else np.zeros(1)
    return {
        "images": len(instances), "objects": int(sum(per_image)), "per_class": counts,
        "objects_per_image": {"mean": float(np.mean(per_image)) if per_image else 0.0, "max": max(per_image, default=0)},
        "box_side_px": {q: float(np.percentile(sides, p)) for q, p in (("p5", 5), ("median", 50), ("p95", 95))},
        "small_boxes": int(np.sum(sides < 16)), "anchor_iou": coverage,
    }  # fmt: skip


def format_summary(split, summary, report):
    lines = [f"[{split}] {summary['images']} images, {summary['objects']} objects "
             f"({summary['objects_per_image']['mean']:.1f} an image, at most {summary['objects_per_image']['max']})"]  # fmt: skip
    width = max(map(len, summary["per_class"]), default=5)
    lines += [
        f"  {label:<{width}}  {n:6d}" + ("   <- none" if n == 0 else "") for label, n in summary["per_class"].items()
    ]
    side = summary["box_side_px"]
    lines.append(f"  box side at the network input (sqrt of area): 5% {side['p5']:.0f} px, median {side['median']:.0f} px, "
                 f"95% {side['p95']:.0f} px; {summary['small_boxes']} boxes under 16 px")  # fmt: skip
    lines.append(f"  anchors: average IoU of a box with its best anchor {summary['anchor_iou']:.3f}"
                 + ("  (low: python main.py anchors --write)" if summary["anchor_iou"] < 0.5 else ""))  # fmt: skip
    if report.files:
        lines.append("  " + report.summary().replace("\n", "\n  "))
    else:
        lines.append("  the seeded 20% of the training files (no validation set configured)")
    return "\n".join(lines)


def short_summary(split, summary):
    """One line for the start of training."""
    classes = ", ".join(f"{label} {n}" for label, n in summary["per_class"].items())
    return (f"[{split}] {summary['images']} images, {summary['objects']} objects ({classes}); median box "
            f"{summary['box_side_px']['median']:.0f} px at the input; anchors cover boxes at IoU "
            f"{summary['anchor_iou']:.3f} (main.py data check for more)")  # fmt: skip


def plot_labels(instances, labels, input_hw, anchors, path):
    """labels.png: class histogram, box-centre heat map, box width / height scatter with the anchors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, heat, scatter) = plt.subplots(1, 3, figsize=(15, 4.6))
    counts = [sum(o["name"] == label for i in instances for o in i["object"]) for label in labels]
    hist.bar(range(len(labels)), counts, color="tab:blue")
    hist.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 6 else 0, fontsize=8)
    hist.set_title("objects per class")
    centres = np.array([((o["xmin"] - 1 + o["xmax"]) / 2 / i["width"], (o["ymin"] - 1 + o["ymax"]) / 2 / i["height"])
                        for i in instances for o in i["object"]]).reshape(-1, 2)  # fmt: skip
    heat.hist2d(centres[:, 0], centres[:, 1], bins=24, range=[[0, 1], [0, 1]], cmap="viridis")
    heat.invert_yaxis()
    heat.set_title("box centres (fraction of the image)")
    shapes = instance_shapes(instances) * [input_hw[1], input_hw[0]]
    scatter.scatter(shapes[:, 0], shapes[:, 1], s=4, alpha=0.4, label="boxes")
    grid_anchors = np.asarray(anchors, np.float64).reshape(-1, 2) * 32
    scatter.scatter(grid_anchors[:, 0], grid_anchors[:, 1], s=80, marker="x", color="tab:red", label="anchors")
    scatter.set_xlabel("width (input px)")
    scatter.set_ylabel("height (input px)")
    scatter.set_title(f"box sizes at {input_hw[1]}x{input_hw[0]}")
    scatter.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def check_data(config, out_dir):
    """`main.py data check`: prints each split's figures and writes out_dir/labels.png -> {split: figures}."""
    from config_checks import as_hw
    from datasets import load_datasets

    labels, anchors = config["model"]["labels"], config["model"]["anchors"]
    input_hw = as_hw(config["model"]["input_size"])
    train_set, valid_set, reports = load_datasets(config)
    summaries = {}
    for split, instances in (("train", train_set), ("valid", valid_set)):
        summaries[split] = summarize(instances, labels, input_hw, anchors)
        print(format_summary(split, summaries[split], reports[split]))
    path = plot_labels(train_set, labels, input_hw, anchors, os.path.join(out_dir, "labels.png"))
    print(f"Training labels drawn in {path}")
    return summaries
