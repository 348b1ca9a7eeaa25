"""Training batches: BatchGenerator turns parsed instances into the training model's inputs and targets, batch
number by batch number (augmentation.py warps the images, preprocessing.encode_targets lays out the targets),
with darknet's multi-scale size schedule.
"""

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import keras
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


class BatchGenerator(keras.utils.PyDataset):
    """Batches ({"input_image": uint8, "true_boxes"}, {"grid", "seen"}) for YoloTrainingModel.

    `seen` (images shown before this batch, darknet's net.seen) drives the loss's warm-up.
    Each batch has exactly batch_size images (the last one wraps around) so compiled steps
    keep one shape. Unreadable images are skipped, counted and replaced by another image.
    The settings come from config.generator_args; `augmentation` None means a plain resize. With
    `multi_scale` (smallest, largest) batches come in square sizes multi_scale_side draws over `epochs`
    epochs of batches. With a `cache` (image_cache.ImageCache) images are read from it instead of decoded.
    With a `shard` (worker index, workers) it builds only that worker's rows of each batch (several machines):
    batch_size stays the global batch, and `seen` counts the whole cluster's images.

    A `stream` (training) has no end: batch i is batch number set_epoch's epoch x len(self) + i of the run,
    epoch after epoch, and fit reads it with steps_per_epoch=len(self). Every batch is a function of its
    number alone, so nothing depends on Keras' epoch hooks (Keras 3 calls on_epoch_end once before training,
    and starts its loader threads before on_epoch_begin). A stream computes the next batches ahead on its own
    `workers` threads, which keep running across epochs: Keras' loader restarts at every epoch and stalled the
    first step of each by 0.4-0.7 s here.
    """

    def __init__(self, instances, layout, batch_size, augmentation, shuffle, times, seed, count_seen, workers,
                 multi_scale, epochs, stream, cache=None, shard=(0, 1)):  # fmt: skip
        super().__init__(workers=1 if stream else workers)  # a stream loads ahead itself
        self.cache = cache
        if not instances:
            raise ValueError("BatchGenerator needs at least one image")
        self.instances = instances
        self.layout = layout
        self.batch_size = batch_size
        self.shard = shard
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.times = max(1, int(times))
        self.seed = seed
        # Validation batches report "seen forever" so the training-only warm-up term stays out of val_loss.
        self.count_seen = count_seen
        self.multi_scale, self.epochs, self.stream = multi_scale, epochs, stream
        self.threads = workers
        self._ahead, self._pool = {}, None
        self.bad_images = set()
        self.label_index = {label: i for i, label in enumerate(layout.labels)}
        self._orders = {}
        self.set_epoch(0)

    def __len__(self):
        """Batches per epoch."""
        return math.ceil(len(self.instances) * self.times / self.batch_size)

    @property
    def num_batches(self):
        return None if self.stream else len(self)

    def set_epoch(self, epoch):
        """Batch 0 is the first batch of `epoch` from now on (resumed runs continue the shuffling, sizes and
        `seen` count where they were)."""
        self.first_batch = epoch * len(self)

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

    def __getitem__(self, i):
        batch = self.first_batch + i
        if not self.stream or self.threads < 2:
            return self.make_batch(batch)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="batches")
        for ahead in range(batch, batch + 2 * self.threads):
            if ahead not in self._ahead:
                self._ahead[ahead] = self._pool.submit(self.make_batch, ahead)
        for stale in [b for b in self._ahead if b < batch]:  # never asked for now (set_epoch moved the stream on)
            del self._ahead[stale]
        return self._ahead.pop(batch).result()

    def make_batch(self, batch):
        """The run's batch number `batch`."""
        batch_size = self.batch_size
        worker, workers = self.shard
        rows = range(worker * batch_size // workers, (worker + 1) * batch_size // workers)
        epoch, idx = divmod(batch, len(self))
        layout, order = self.batch_layout(batch), self.order(epoch)
        images = np.zeros((len(rows), *layout.input_hw, layout.channels), np.uint8)
        nb_box, nb_class = len(layout.anchors) // 2, len(layout.labels)
        grids = np.zeros((len(rows), *layout.grid_hw, nb_box, 5 + nb_class), np.float32)
        true_boxes = np.zeros((len(rows), 1, 1, 1, layout.max_box_per_image, 4), np.float32)
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
