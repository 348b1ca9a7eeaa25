"""report.html: a run on one page (the summary blocks, the evaluation table, the curves, the images, the config).

The images are embedded (data: URIs), so the page is one file that reads offline, travels as an attachment and
shows in a notebook output cell (IPython.display.HTML(open(path).read())), where relative links would not
resolve. Each image's alt text is its path in the run folder.
"""

import base64
import glob
import html
import json
import os

from weight_files import atomic_write

# (heading, the images as paths or glob patterns relative to the run folder), in reading order
SECTIONS = [
    ("Training", ["training_curves.png"]),
    ("What the network was fed: the first augmented batches with their targets", ["train_batch*.jpg"]),
    ("Validation: ground truth and detections on the same images", ["val_batch0_labels.jpg", "val_batch0_pred.jpg"]),
    (
        "Scores against the threshold, and the confusion matrix",
        ["f1_curve.png", "p_curve.png", "r_curve.png", "confusion_matrix.png"],
    ),  # fmt: skip
    ("Precision-recall", ["pr_curves/pr_all.png", "pr_curves/pr_*.png"]),
    ("Predictions", ["predictions/*.jpg"]),
]
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
pre{background:#f5f5f5;padding:.6em;overflow-x:auto;font-size:12px}
img{max-width:100%;margin:4px;border:1px solid #ddd;vertical-align:top}
.grid img{max-width:31%}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}"""


def section_images(run_dir, patterns):
    """The files the patterns name, each once, in the patterns' order (sorted within a glob)."""
    found = []
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), pattern))):
            relative = os.path.relpath(path, run_dir).replace(os.sep, "/")
            if relative not in found:
                found.append(relative)
    return found


def embedded_image(run_dir, relative):
    with open(os.path.join(run_dir, relative), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    mime = MIME[os.path.splitext(relative)[1].lower()]
    name = html.escape(relative, quote=True)
    return f'<img src="data:{mime};base64,{data}" alt="{name}" title="{name}">'


def write_report(run_dir, start_block, end_block, table):
    """Writes <run_dir>/report.html from what the run folder holds; returns its path."""
    title = f"YOLOv2 run {os.path.basename(os.path.normpath(run_dir))}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<h2>Result</h2>", pre(end_block), pre(table), "<h2>Run</h2>", pre(start_block)]  # fmt: skip
    for heading, patterns in SECTIONS:
        images = section_images(run_dir, patterns)
        if images:
            grid = " class='grid'" if len(images) > 2 else ""
            parts.append(f"<h2>{html.escape(heading)}</h2><div{grid}>")
            parts += [embedded_image(run_dir, relative) for relative in images]
            parts.append("</div>")
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            parts += ["<h2>Config (as trained)</h2>", pre(json.dumps(json.load(f), indent=2))]
    parts.append("</body></html>")
    path = os.path.join(run_dir, "report.html")
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


def pre(text):
    return f"<pre>{html.escape(text)}</pre>"
