"""`python main.py bench`: where training and inference time goes on this machine, as a table and JSON.

For the config's detector (backend, input size, batch, frozen or not) on its training images:
* pipeline: BatchGenerator alone (augmentation, target encoding) on `workers` loaders (train.loader: processes
  or threads) for 10 x steps batches, img/s, decoding the JPEGs and reading the decode-once cache (its build time
  and size too), and from the cache with the other kind of loader; beside them, the same JPEGs decoded and resized
  alone on as many threads: this machine's speed today (shared machines drift by a third from day to day, the
  ratios much less);
* one loader: cached batches made on one thread with OpenCV on one thread, img/s, and the part of an image's time
  outside OpenCV's calls (Python and numpy, which hold the GIL): loader threads cannot pass 1 / that time however
  many cores there are, loader processes scale by cores from the img/s;
* step: the bare train step on one batch already converted to backend tensors, img/s;
* fit: `model.fit` through the whole pipeline, img/s (the second epoch: the first one compiles);
  fit / step says how much the pipeline costs the accelerator;
* inference: img/s at batch 64 and the batch-1 latency, on tensors already converted;
* FLOPs per image (2 x multiply-accumulates, as darknet counts) and what the measured rates achieve:
  inference counts the forward pass, training the forward pass plus twice the trainable layers' (backward).
With `--bookkeeping`: parsing 10,000 VOC annotation files (then again, from the parse cache), and scoring 5,000 images with 20 classes and
100 detections each (VOC and COCO AP), the parts of a VOC-scale run that do not touch the network.
"""

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import keras
import numpy as np

from backends.report import count_flops
from batches import BatchGenerator
from config import compile_args, generator_args, optimizer_args
from image_cache import open_cache
from images import decode_image
from preprocessing import ParseReport, TargetLayout
from tf_data import fit_data
from weight_files import atomic_write


def images_per_second(run, images, repeats):
    """`run()` once to warm up (compilation), then `repeats` times timed -> images per second."""
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return images * repeats / (time.perf_counter() - start)


def decode_rate(instances, out_hw, threads, count):
    """img/s of decoding `count` of the images and resizing them to `out_hw` on `threads` threads, nothing else."""

    def decode_and_resize(path):
        image = decode_image(path)
        return None if image is None else cv2.resize(image, out_hw[::-1])

    files = [instances[i % len(instances)]["filename"] for i in range(count)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decode_image, files[:threads]))  # thread start-up and file cache, untimed
        start = time.perf_counter()
        list(pool.map(decode_and_resize, files))
    return count / (time.perf_counter() - start)


def loader_kind(generator):
    """What made a stream's batches ahead: "processes" or "threads" (processes fall back to threads where the
    shared memory is too small)."""
    return "processes" if generator.processes else "threads"


OPENCV_CALLS = ("warpAffine", "cvtColor", "transform")  # augmentation's, which release the GIL while they run


def one_loader(maker, batches):
    """maker.make_batch on this thread with OpenCV on one thread -> img/s, ms an image and ms of it outside
    OPENCV_CALLS (timed by wrapping them for the while)."""
    inside = 0.0

    def timed(call):
        def wrapper(*args, **kwargs):
            nonlocal inside
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                inside += time.perf_counter() - start

        return wrapper

    originals, threads = {name: getattr(cv2, name) for name in OPENCV_CALLS}, cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for name, call in originals.items():
            setattr(cv2, name, timed(call))
        maker.make_batch(0)  # untimed: first allocations
        inside, start = 0.0, time.perf_counter()
        for batch in range(1, batches + 1):
            maker.make_batch(batch)
        total = time.perf_counter() - start
    finally:
        for name, call in originals.items():
            setattr(cv2, name, call)
        cv2.setNumThreads(threads)
    images = batches * maker.batch_size
    return {"one_loader_img_s": images / total, "one_loader_ms": 1e3 * total / images,
            "one_loader_gil_ms": 1e3 * (total - inside) / images}  # fmt: skip


def pipeline_rate(generator, steps):
    """Batches read in order from a training stream, as fit reads them (it loads ahead on its own loaders),
    after untimed first batches: the first one of each loader allocates its buffers (processes start)."""
    generator.set_epoch(0)
    for i in range(generator.loaders):
        generator[i]
    start = time.perf_counter()
    for i in range(generator.loaders, generator.loaders + steps):
        generator[i]
    return steps * generator.batch_size / (time.perf_counter() - start)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def run_bench(yolo, config, instances, steps=10, inference_batch=64, latency_runs=20):
    """-> dict of the figures the module docstring lists (the Python API of `main.py bench`)."""
    layout, train_args = TargetLayout.of(yolo), generator_args(config, "train")
    detection = detection_cost(yolo, instances)  # first: after training this machine measured it 3-4x slower
    from_jpeg = BatchGenerator(instances, layout, **train_args)
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cache = open_cache([i["filename"] for i in instances], cache_dir, train_args["workers"], progress=False)
        cache_figures = {"cache_build_s": time.perf_counter() - start, "cache_mib": cache.nbytes() / 2**20}
        from_cache = BatchGenerator(instances, layout, **train_args, cache=cache)
        other_loader = BatchGenerator(instances, layout, **{**train_args, "processes": not train_args["processes"]},
                                      cache=cache)  # fmt: skip
        # decoding alone first: loaders go on making batches ahead for a moment after they are last asked
        pipelines = {"decode_img_s": decode_rate(instances, layout.input_hw, train_args["workers"],
                                                 10 * steps * from_jpeg.batch_size),
                     **one_loader(from_cache, 5 * steps)}  # fmt: skip
        for name, generator in [("pipeline_img_s", from_jpeg), ("pipeline_cache_other_loader_img_s", other_loader),
                                ("pipeline_cache_img_s", from_cache)]:  # fmt: skip
            pipelines[name] = pipeline_rate(generator, 10 * steps)
            if generator is not from_cache:  # fit goes on with that one
                generator.close()
        pipelines |= {"loader": loader_kind(from_cache), "other_loader": loader_kind(other_loader)}
        # fit reads images as training does: through the cache when train.cache_images is on
        training = train_step_and_fit(yolo, config, from_cache if config["train"]["cache_images"] else from_jpeg, steps)
        from_cache.close()
        del cache, from_cache, other_loader  # the memory map is closed before its folder goes
    inference = inference_rates(yolo, (*layout.input_hw, layout.channels), inference_batch, latency_runs)
    forward = count_flops(yolo.inference_model)
    training_flops = forward + 2 * count_flops(yolo.inference_model, trainable_only=True)
    training_tflop_s = training_flops * training["step_img_s"] / 1e12
    return {
        "keras_backend": keras.backend.backend(),
        "backend": yolo.backend.name,
        "input_size": list(layout.input_hw),
        "batch_size": from_jpeg.batch_size,
        "freeze_backend": yolo.freeze_backend,
        "precision": yolo.precision,
        "trainable_parameters": sum(int(np.prod(v.shape)) for v in yolo.model.trainable_weights),
        "images": len(instances),
        "workers": train_args["workers"],
        **pipelines,
        **cache_figures,
        **training,
        **inference,
        **detection,
        "gflops_per_image": forward / 1e9,
        "training_gflops_per_image": training_flops / 1e9,
        "inference_tflop_s": forward * inference["inference_img_s"] / 1e12,
        "training_tflop_s": training_tflop_s,
    }


def train_step_and_fit(yolo, config, generator, steps):
    """The bare train step on one batch already converted to backend tensors (timed before and after fit, the
    mean of the two: this machine's speed drifts), and fit through the `generator` stream (its second epoch
    of `steps` batches: the first one compiles)."""
    from optimizer import make_optimizer

    yolo.model.compile(optimizer=make_optimizer(10 * steps, **optimizer_args(config)), **compile_args(config))
    x, y = keras.tree.map_structure(keras.ops.convert_to_tensor, generator[0])
    before = images_per_second(lambda: yolo.model.train_on_batch(x, y), generator.batch_size, steps)
    timer = EpochTimer()
    yolo.model.fit(fit_data(generator, 0), epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    fit = steps * generator.batch_size / timer.seconds
    after = images_per_second(lambda: yolo.model.train_on_batch(x, y), generator.batch_size, steps)
    step = (before + after) / 2
    return {
        "step_img_s": step,
        "fit_img_s": fit,
        "fit_over_step": fit / step,
        "jit_compile": bool(yolo.model.jit_compile),
    }


def inference_rates(yolo, shape, batch, latency_runs):
    """img/s of the inference model at `batch`, and the median batch-1 latency, on converted tensors."""
    rng = np.random.default_rng(0)
    many = keras.ops.convert_to_tensor(rng.integers(0, 256, (batch, *shape), dtype=np.uint8))
    one = keras.ops.convert_to_tensor(rng.integers(0, 256, (1, *shape), dtype=np.uint8))
    rate = images_per_second(lambda: yolo.inference_model.predict_on_batch(many), batch, 3)
    yolo.inference_model.predict_on_batch(one)
    latencies = []
    for _ in range(latency_runs):
        start = time.perf_counter()
        yolo.inference_model.predict_on_batch(one)
        latencies.append(time.perf_counter() - start)
    return {"inference_img_s": rate, "inference_batch": batch, "latency_ms": 1000 * float(np.median(latencies))}


def detection_cost(yolo, instances, batch=8, repeats=5):
    """ms per image of the forward pass alone and of decoding + NMS in the graph on top of it (what detect()
    runs), on `batch` training images at the AP score floor
    (an untrained head passes every candidate there: the worst case). Each figure is the fastest of
    `repeats` runs, the two passes taking turns, so a slower moment of the machine does not land on one."""
    from augmentation import network_input
    from evaluate import AP_SCORE_FLOOR

    images = [decode_image(i["filename"]) for i in instances[:batch]]
    x = np.stack([network_input(im, (yolo.input_h, yolo.input_w), yolo.input_channels) for im in images])
    settings = {"score_threshold": AP_SCORE_FLOOR, "nms_threshold": 0.45, "max_detections": 300}
    detector = yolo.detection_model(**settings)
    found = detector.predict_on_batch(x)
    runs = {"forward": lambda: yolo.inference_model.predict_on_batch(x), "graph": lambda: detector.predict_on_batch(x)}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - start) * 1000 / len(x))
    kept = float(np.mean(keras.ops.convert_to_numpy(found["num_detections"])))
    return {"forward_ms": best["forward"], "graph_nms_ms": best["graph"] - best["forward"],
            "nms_over_forward": (best["graph"] - best["forward"]) / best["forward"], "detections_per_image": kept}  # fmt: skip


def bookkeeping(n_files=10_000, n_images=5_000, n_classes=20, per_image=100, seed=0):
    """Seconds to parse `n_files` VOC XML files, and to score `n_images` x `per_image` detections over
    `n_classes` classes (3 objects an image) with VOC and COCO AP."""
    from datasets import load_folders
    from demo_data import VOC_OBJECT, VOC_XML
    from evaluate import evaluate_detections

    rng = np.random.default_rng(seed)
    labels = [f"class{c}" for c in range(n_classes)]
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as cache:
        obj = VOC_OBJECT.format(name="class3", xmin=10, ymin=20, xmax=200, ymax=150)
        for i in range(n_files):
            with open(os.path.join(folder, f"{i:06d}.xml"), "w") as f:
                f.write(VOC_XML.format(filename=f"{i:06d}.jpg", width=500, height=375, objects=obj * 2))
        image = cv2.imencode(".jpg", np.zeros((375, 500, 3), np.uint8))[1].tobytes()  # parsing reads its header
        for i in range(n_files):
            with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
                f.write(image)
        times = []
        for _ in range(2):  # the first parse also writes parse_cache's file, the second reads it
            report = ParseReport()
            start = time.perf_counter()
            parsed = load_folders(folder, folder, labels, report, cache)
            times.append(time.perf_counter() - start)
        parse_seconds, cached_seconds = times

    instances, detections = [], []
    for _ in range(n_images):
        corners = rng.uniform(0, 250, (3, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(20, 200, (3, 2))], axis=1)
        classes = rng.integers(0, n_classes, 3)
        instances.append({"object": [{"name": labels[c], "difficult": False, **dict(zip(("xmin", "ymin", "xmax", "ymax"), b))}
                                     for b, c in zip(boxes, classes)]})  # fmt: skip
        noise = boxes[rng.integers(0, 3, per_image)] + rng.normal(0, 15, (per_image, 4))
        detections.append((noise, rng.uniform(0.005, 1, per_image), rng.integers(0, n_classes, per_image)))
    start = time.perf_counter()
    results = evaluate_detections(instances, detections, labels, "voc", 0.3)
    scored = sum(r["n_det"] for r in results["classes"].values())
    return {"parse_files": report.files, "parse_instances": len(parsed), "parse_s": parse_seconds,
            "cached_parse_s": cached_seconds, "eval_images": n_images,
            "eval_detections": scored, "eval_s": time.perf_counter() - start}  # fmt: skip


def format_bench(result):
    lines = [f"bench: {result['backend']} {result['input_size'][1]}x{result['input_size'][0]}, batch "
             f"{result['batch_size']}, freeze_backend {result['freeze_backend']} "
             f"({result['trainable_parameters']:,} trainable parameters), {result['precision']}, XLA "
             f"{'on' if result['jit_compile'] else 'off'}, Keras on {result['keras_backend']}, "
             f"{result['images']} training images, {result['workers']} loader {result['loader']}",
             f"{'JPEG decode + resize alone':<34}{result['decode_img_s']:>10.1f} img/s   this machine's speed today",
             f"{'input pipeline alone (JPEG)':<34}{result['pipeline_img_s']:>10.1f} img/s   "
             f"{result['pipeline_img_s'] / result['decode_img_s']:.2f} x decode alone",
             f"{'input pipeline alone (cache)':<34}{result['pipeline_cache_img_s']:>10.1f} img/s   cache built in "
             f"{result['cache_build_s']:.1f} s, {result['cache_mib']:.1f} MiB; "
             f"{result['pipeline_cache_img_s'] / result['decode_img_s']:.2f} x decode alone",
             f"{'  the same with loader ' + result['other_loader']:<34}"
             f"{result['pipeline_cache_other_loader_img_s']:>10.1f} img/s   {result['loader']} / {result['other_loader']} "
             f"{result['pipeline_cache_img_s'] / result['pipeline_cache_other_loader_img_s']:.2f}",
             f"{'one loader, OpenCV on 1 thread':<34}{result['one_loader_img_s']:>10.1f} img/s   "
             f"{result['one_loader_ms']:.2f} ms an image, {result['one_loader_gil_ms']:.2f} ms "
             f"({100 * result['one_loader_gil_ms'] / result['one_loader_ms']:.0f}%) outside OpenCV holding the GIL: "
             f"loader threads cap near {1e3 / result['one_loader_gil_ms']:,.0f} img/s",
             f"{'train step, synthetic batch':<34}{result['step_img_s']:>10.1f} img/s"
             f"{result['training_tflop_s']:>10.3f} TFLOP/s",
             f"{'fit through the pipeline':<34}{result['fit_img_s']:>10.1f} img/s   fit / step "
             f"{result['fit_over_step']:.2f}",
             f"{'inference, batch ' + str(result['inference_batch']):<34}{result['inference_img_s']:>10.1f} img/s"
             f"{result['inference_tflop_s']:>10.3f} TFLOP/s",
             f"{'inference latency, batch 1':<34}{result['latency_ms']:>10.2f} ms",
             f"{'decode + NMS in the graph':<34}{nms_cost(result)} ({result['forward_ms']:.1f} ms/img, batch 8, "
             f"score floor 0.005, {result['detections_per_image']:.0f} boxes kept an image)",
             f"{'GFLOPs per image':<34}{result['gflops_per_image']:>10.2f} forward, "
             f"{result['training_gflops_per_image']:.2f} training"]  # fmt: skip
    if "bookkeeping" in result:
        b = result["bookkeeping"]
        lines += [f"{'parse ' + format(b['parse_files'], ',') + ' annotation files':<34}{b['parse_s']:>10.2f} s"
                  f"   again, from the parse cache: {b['cached_parse_s']:.2f} s",
                  f"{'score ' + format(b['eval_detections'], ',') + ' detections':<34}{b['eval_s']:>10.2f} s"
                  f"   ({b['eval_images']:,} images, VOC + COCO AP)"]  # fmt: skip
    return "\n".join(lines)


def nms_cost(result):
    if result["graph_nms_ms"] <= 0:  # the fastest runs with and without it: no difference to measure
        return f"{'~0':>10} ms/img  below the timing noise of the forward pass"
    return f"{result['graph_nms_ms']:>10.2f} ms/img  {100 * result['nms_over_forward']:.1f}% of the forward pass"


def write_bench(result, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    return path
