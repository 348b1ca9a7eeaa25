"""Precision, recall and F1 against the score threshold, per class and their mean, from an evaluation's matched
detections (evaluate.evaluate_detections), and the threshold with the best mean F1: the score threshold that
balances missed objects against false alarms on this validation set, offered to `predict`.

At threshold t a class keeps its detections scoring t or more; with none kept its P, R and F1 are 0.
"""

import os

import numpy as np

THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def threshold_curves(results, thresholds=THRESHOLDS):
    """-> {"thresholds", "classes": {label: {"precision", "recall", "f1"}}, "mean": {...}, "best": {"threshold",
    "f1", "precision", "recall"}} over the classes with objects."""
    classes = {}
    for label, r in results["classes"].items():
        if r["n_gt"] == 0:
            continue
        scores = np.asarray(r["scores"])  # best first; precision and recall are cumulative along them
        if len(scores):
            kept = np.searchsorted(-scores, -thresholds, side="right")  # how many score t or more
            at = np.maximum(kept - 1, 0)
            precision = np.where(kept > 0, np.asarray(r["precision"])[at], 0.0)
            recall = np.where(kept > 0, np.asarray(r["recall"])[at], 0.0)
        else:
            precision = recall = np.zeros(len(thresholds))
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        classes[label] = {"precision": precision, "recall": recall, "f1": f1}
    mean = {k: np.mean([c[k] for c in classes.values()], axis=0) if classes else np.zeros(len(thresholds))
            for k in ("precision", "recall", "f1")}  # fmt: skip
    k = len(thresholds) - 1 - int(np.argmax(mean["f1"][::-1]))  # of equal F1s the highest threshold: fewer boxes
    best = {"threshold": float(thresholds[k]), "f1": float(mean["f1"][k]), "precision": float(mean["precision"][k]),
            "recall": float(mean["recall"][k])}  # fmt: skip
    return {"thresholds": thresholds, "classes": classes, "mean": mean, "best": best}


def plot_threshold_curves(curves, out_dir):
    """f1_curve.png, p_curve.png, r_curve.png: each class thin, the mean thick, the best-F1 threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for key, name in (("f1", "F1"), ("precision", "precision"), ("recall", "recall")):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, c in curves["classes"].items():
            ax.plot(curves["thresholds"], c[key], linewidth=1, alpha=0.6, label=label)
        ax.plot(curves["thresholds"], curves["mean"][key], linewidth=3, color="tab:blue", label="all classes")
        best = curves["best"]
        ax.axvline(best["threshold"], color="gray", linestyle="--", linewidth=1,
                   label=f"best F1 {best['f1']:.3f} at {best['threshold']:.2f}")  # fmt: skip
        ax.set_xlabel("score threshold")
        ax.set_ylabel(name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{'p' if key == 'precision' else 'r' if key == 'recall' else 'f1'}_curve.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
