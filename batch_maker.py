"""One training batch from its number: images read (decode-once cache or file), augmented (augmentation.py), targets
laid out (preprocessing.encode_targets), with darknet's multi-scale size schedule.

Nothing here imports Keras or a deep-learning framework: loader processes (batch_processes.py) import this module
and start in a fraction of a second, and batches.BatchGenerator adds what Keras' fit needs on top.
"""

import math
import warnings

import numpy as np

from augmentation import augment, resize_for_network
from images import decode_image, to_channels
from preprocessing import encode_targets, instance_boxes

MULTI_SCALE_EVERY = 10
MULTI_SCALE_FINAL_BATCHES = 200


def multi_scale_side(batch, sizes, total_batches, seed):
    """The square side for training batch number `batch` (counted over the whole run): one draw per
    MULTI_SCALE_EVERY batches among the multiples of 32 from sizes[0] to sizes[1], seeded by the batch group
    so a resumed run draws the same sizes."""
    if batch + MULTI_SCALE_FINAL_BATCHES >= total_batches:
        return sizes[1]
    sides = range(sizes[0], sizes[1] + 1, 32)
    return sides[int(np.random.default_rng((seed, batch // MULTI_SCALE_EVERY, 1)).integers(len(sides)))]


class BatchMaker:
    """make_batch(n) -> ({"input_image": uint8, "true_boxes"}, {"grid", "seen"}): the run's batch number n, a function
    of n alone (its image order, augmentation draws and multi-scale size are all seeded by it).

    `seen` (images shown before this batch, darknet's net.seen) drives the loss's warm-up. Each batch has exactly
    batch_size images (the last one of an epoch wraps around) so compiled steps keep one shape. Unreadable images are
    skipped, counted and replaced by another image. `augmentation` None means a plain resize. With `multi_scale`
    (smallest, largest) batches come in square sizes multi_scale_side draws over `epochs` epochs of batches. With a
    `cache` (image_cache.ImageCache) images are read from it instead of decoded. With a `shard` (worker index,
    workers) it builds only that worker's rows of each batch (several machines): batch_size stays the global batch,
    and `seen` counts the whole cluster's images.
    """

    def __init__(self, instances, layout, batch_size, augmentation, shuffle, times, seed, count_seen, multi_scale,
                 epochs, cache=None, shard=(0, 1)):  # fmt: skip
        if not instances:
            raise ValueError("BatchGenerator needs at least one image")
        self.settings = {key: value for key, value in locals().items() if key != "self"}  # the arguments
        self.instances = instances
        self.layout = layout
        self.batch_size = batch_size
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.times = max(1, int(times))
        self.seed = seed
        # Validation batches report "seen forever" so the training-only warm-up term stays out of val_loss.
        self.count_seen = count_seen
        self.multi_scale, self.epochs = multi_scale, epochs
        self.cache = cache
        self.shard = shard
        self.bad_images = set()
        self.label_index = {label: i for i, label in enumerate(layout.labels)}
        self._orders = {}

    def plain(self):
        """A BatchMaker with the same settings and nothing else: what a loader process is sent."""
        return BatchMaker(**self.settings)

    def __len__(self):
        """Batches per epoch."""
        return math.ceil(len(self.instances) * self.times / self.batch_size)

    def order(self, epoch):
        """The image order of `epoch`: every image `times` times, shuffled per epoch (seeded)."""
        if epoch not in self._orders:
            order = np.tile(np.arange(len(self.instances)), self.times)
            if self.shuffle:
                np.random.default_rng((self.seed, epoch)).shuffle(order)
            # loader threads may straddle an epoch's end: keep the neighbouring orders
            self._orders = {e: o for e, o in self._orders.items() if abs(e - epoch) <= 1} | {epoch: order}
        return self._orders[epoch]

    def batch_layout(self, batch):
        """The layout of the run's batch number `batch`: the detector's, or a multi-scale size."""
        if not self.multi_scale:
            return self.layout
        return self.layout.at(multi_scale_side(batch, self.multi_scale, self.epochs * len(self), self.seed))

    def largest_layout(self):
        """The layout of the largest batches this maker can make (what a buffer for any of them must hold)."""
        return self.layout.at(self.multi_scale[1]) if self.multi_scale else self.layout

    def rows(self):
        """The rows of each global batch this maker builds (all of them, or its worker's shard)."""
        worker, workers = self.shard
        return range(worker * self.batch_size // workers, (worker + 1) * self.batch_size // workers)

    def load(self, index, rng, out_hw):
        """-> (image uint8 (out_hw, channels), normalised boxes (N, 4), class ids) of instance `index`."""
        instance = self.instances[index]
        image = None if index in self.bad_images else self.read(instance["filename"])
        if image is None:
            if index not in self.bad_images:
                self.bad_images.add(index)
                warnings.warn(f"Unreadable image skipped: {instance['filename']}", stacklevel=2)
            good = [i for i in range(len(self.instances)) if i not in self.bad_images]
            if not good:
                raise RuntimeError("None of the images in the dataset could be read")
            return self.load(int(rng.choice(good)), rng, out_hw)
        boxes, names = instance_boxes(instance, train=True)
        # Annotation sizes can disagree with the file (resized images): scale boxes to the file.
        boxes = boxes * np.array(
            [image.shape[1] / instance["width"], image.shape[0] / instance["height"]] * 2, np.float32
        )
        if self.augmentation is not None:
            image, boxes = augment(image, boxes, out_hw, rng, **self.augmentation)
        else:
            image, boxes = resize_for_network(image, boxes, out_hw)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0.001) & ((boxes[:, 3] - boxes[:, 1]) > 0.001)
        class_ids = [self.label_index[n] for n, k in zip(names, keep) if k]
        return to_channels(image, self.layout.channels), boxes[keep], class_ids

    def read(self, path):
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        return decode_image(path)

    def make_batch(self, batch, out=None):
        """The run's batch number `batch`; with `out` (arrays shaped as those of the largest layout, e.g. shared
        memory) it is written into their leading part, which the returned arrays are views of."""
        batch_size, rows = self.batch_size, self.rows()
        epoch, idx = divmod(batch, len(self))
        layout, order = self.batch_layout(batch), self.order(epoch)
        nb_box, nb_class = len(layout.anchors) // 2, len(layout.labels)
        shapes = {"input_image": (len(rows), *layout.input_hw, layout.channels),
                  "grid": (len(rows), *layout.grid_hw, nb_box, 5 + nb_class),
                  "true_boxes": (len(rows), 1, 1, 1, layout.max_box_per_image, 4)}  # fmt: skip
        arrays = batch_arrays(shapes, out)
        images, grids, true_boxes = arrays["input_image"], arrays["grid"], arrays["true_boxes"]
        for b, row in enumerate(rows):
            index = int(order[(idx * batch_size + row) % len(order)])
            rng = np.random.default_rng((self.seed, epoch, idx, row))  # a row's draws do not depend on the shard
            images[b], boxes, class_ids = self.load(index, rng, layout.input_hw)
            grids[b], true_boxes[b, 0, 0, 0] = encode_targets(
                boxes, class_ids, layout.grid_hw, layout.anchors, nb_class, layout.max_box_per_image
            )
        seen_before = batch * batch_size if self.count_seen else np.finfo(np.float32).max
        seen = np.full((len(rows),), seen_before, np.float32)
        return {"input_image": images, "true_boxes": true_boxes}, {"grid": grids, "seen": seen}

    def buffer_sizes(self):
        """Bytes of each array of the largest batch (make_batch's `out`)."""
        layout = self.largest_layout()
        n, nb_box = len(self.rows()), len(layout.anchors) // 2
        return {"input_image": n * math.prod(layout.input_hw) * layout.channels,
                "grid": 4 * n * math.prod(layout.grid_hw) * nb_box * (5 + len(layout.labels)),
                "true_boxes": 4 * n * layout.max_box_per_image * 4}  # fmt: skip


DTYPES = {"input_image": np.uint8, "grid": np.float32, "true_boxes": np.float32}


def batch_arrays(shapes, out=None):
    """Arrays of `shapes` (name -> shape): new ones, or views of the leading part of the buffers `out` (name ->
    1-D uint8 buffer), left as they are: make_batch writes every value of every row."""
    if out is None:
        return {name: np.zeros(shape, DTYPES[name]) for name, shape in shapes.items()}
    return {name: out[name][: math.prod(shape) * np.dtype(DTYPES[name]).itemsize].view(DTYPES[name]).reshape(shape)
            for name, shape in shapes.items()}  # fmt: skip
