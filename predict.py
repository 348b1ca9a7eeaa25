"""Prediction on an image, a folder of images, a video file or a webcam: boxes drawn with label and
score, and the detections as records of the evaluation's detections file (see evaluate.py).

`run_prediction` is what `main.py predict` runs.
"""

import json
import os
import sys

import cv2
from tqdm import tqdm

from evaluate import detection_records
from preprocessing import IMAGE_EXTENSIONS, decode_image
from utils import draw_boxes

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class PredictionError(Exception):
    """Bad prediction input, reported without a traceback."""


def input_kind(source):
    """-> "webcam" (a device index such as "0"), "folder", "image" or "video"."""
    if source.isdigit():
        return "webcam"
    if os.path.isdir(source):
        return "folder"
    if not os.path.exists(source):
        raise PredictionError(f"Input not found: {source}")
    ext = os.path.splitext(source)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise PredictionError(
        f"{source}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or a video ({', '.join(VIDEO_EXTENSIONS)})"
    )


def has_display():
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_prediction(yolo, source, out_dir, threshold=0.3, nms=0.45, json_path=None, max_frames=None, show=None):
    """Predicts on `source`, writes the drawn results into `out_dir` (and the records to `json_path`)."""
    kind = input_kind(source)
    os.makedirs(out_dir, exist_ok=True)
    settings = {"threshold": threshold, "nms": nms}
    if kind in ("image", "folder"):
        paths = [source] if kind == "image" else image_files(source)
        if not paths:
            raise PredictionError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {source}")
        records = predict_images(yolo, paths, out_dir, **settings)
    else:
        capture = cv2.VideoCapture(int(source) if kind == "webcam" else source)
        if not capture.isOpened():
            what = f"webcam {source}" if kind == "webcam" else f"video {source}"
            raise PredictionError(f"Cannot open {what}" + (": is a camera connected?" if kind == "webcam" else ""))
        name = f"webcam{source}" if kind == "webcam" else os.path.basename(source)
        show = has_display() if show is None and kind == "webcam" else bool(show)
        try:
            records = predict_stream(yolo, capture, name, out_dir, live=kind == "webcam", show=show,
                                     max_frames=max_frames, **settings)  # fmt: skip
        finally:
            capture.release()
    if json_path:
        with open(json_path, "w") as f:
            json.dump(records, f, indent=1)
        print(f"Detections ({len(records)}): {json_path}")
    print(f"Output: {out_dir}")
    return records


def image_files(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def predict_images(yolo, paths, out_dir, threshold=0.3, nms=0.45, batch_size=8):
    """Each image drawn into out_dir/<name>.jpg; unreadable files are skipped and reported."""
    records, unreadable = [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", disable=len(paths) <= 1):
        batch = [(path, decode_image(path)) for path in paths[start : start + batch_size]]
        unreadable += [path for path, image in batch if image is None]
        batch = [(path, image) for path, image in batch if image is not None]
        for (path, image), detection in zip(batch, yolo.detect([image for _, image in batch], threshold, nms)):
            name = os.path.basename(path)
            write_image(draw_boxes(image, *detection, yolo.labels), os.path.join(out_dir, name))
            records += detection_records(name, detection, yolo.labels)
    if unreadable:
        print(f"Skipped {len(unreadable)} unreadable image(s): {', '.join(unreadable[:5])}")
    print(f"{len(records)} detections in {len(paths) - len(unreadable)} image(s).")
    return records


def write_image(rgb, path):
    cv2.imwrite(os.path.splitext(path)[0] + ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def predict_stream(yolo, capture, name, out_dir, threshold=0.3, nms=0.45, live=False, show=False, max_frames=None):
    """Frames from an OpenCV capture. A video file becomes out_dir/<name>.mp4 with the boxes drawn; a
    live camera is shown in a window (q or Esc stops) or, without a display, written as numbered JPEGs.
    Records carry the frame number."""
    total = None if live else int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if max_frames:
        total = min(total or max_frames, max_frames)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, frames_dir = None, os.path.join(out_dir, os.path.splitext(name)[0])
    if live and not show:
        os.makedirs(frames_dir, exist_ok=True)
        print(f"No display: writing frames to {frames_dir} (Ctrl-C stops)")
    records, frame_number = [], 0
    progress = tqdm(total=total, desc=name, unit="frame")
    try:
        while max_frames is None or frame_number < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            detection = yolo.detect([image], threshold, nms)[0]
            drawn = cv2.cvtColor(draw_boxes(image, *detection, yolo.labels), cv2.COLOR_RGB2BGR)
            records += [{**r, "frame": frame_number} for r in detection_records(name, detection, yolo.labels)]
            if not live:
                if writer is None:
                    path = os.path.join(out_dir, os.path.splitext(name)[0] + ".mp4")
                    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
                writer.write(drawn)
            elif show:
                cv2.imshow(f"YOLOv2: {name} (q to quit)", drawn)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            else:
                cv2.imwrite(os.path.join(frames_dir, f"frame_{frame_number:06d}.jpg"), drawn)
            frame_number += 1
            progress.update()
    except KeyboardInterrupt:
        print("Stopped.")
    finally:
        progress.close()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    print(f"{len(records)} detections in {frame_number} frames.")
    return records
