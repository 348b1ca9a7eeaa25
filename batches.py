"""Training batches for model.fit: BatchGenerator streams batch_maker's batches to Keras, made ahead by loader threads
or loader processes (batch_processes.py).
"""

from concurrent.futures import ThreadPoolExecutor

import keras

from batch_maker import BatchMaker


class BatchGenerator(BatchMaker, keras.utils.PyDataset):
    """Batches ({"input_image": uint8, "true_boxes"}, {"grid", "seen"}) for YoloTrainingModel (batch_maker.BatchMaker
    says what they hold). The settings come from config.generator_args.

    A `stream` (training) has no end: batch i is batch number set_epoch's epoch x len(self) + i of the run,
    epoch after epoch, and fit reads it with steps_per_epoch=len(self). Every batch is a function of its
    number alone, so nothing depends on Keras' epoch hooks (Keras 3 calls on_epoch_end once before training,
    and starts its loader threads before on_epoch_begin). A stream computes the next batches ahead on its own
    `workers` loaders, which keep running across epochs: Keras' loader restarts at every epoch and stalled the
    first step of each by 0.4-0.7 s here. The loaders are threads, or with `processes` worker processes, which
    scale past the GIL on machines with many cores.
    """

    def __init__(self, instances, layout, batch_size, augmentation, shuffle, times, seed, count_seen, workers,
                 multi_scale, epochs, stream, cache=None, shard=(0, 1), processes=False):  # fmt: skip
        BatchMaker.__init__(self, instances, layout, batch_size, augmentation, shuffle, times, seed, count_seen,
                            multi_scale, epochs, cache, shard)  # fmt: skip
        keras.utils.PyDataset.__init__(self, workers=1 if stream else workers)  # a stream loads ahead itself
        self.stream = stream
        self.loaders, self.processes = workers, processes
        self._ahead, self._pool, self._process_loader = {}, None, None
        self.set_epoch(0)

    @property
    def num_batches(self):
        return None if self.stream else len(self)

    def set_epoch(self, epoch):
        """Batch 0 is the first batch of `epoch` from now on (resumed runs continue the shuffling, sizes and
        `seen` count where they were)."""
        self.first_batch = epoch * len(self)

    def __getitem__(self, i):
        batch = self.first_batch + i
        if not self.stream or self.loaders < 2:
            return self.make_batch(batch)
        if self.processes and self.process_loader() is not None:
            return self._process_loader.get(batch)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.loaders, thread_name_prefix="batches")
        for ahead in range(batch, batch + 2 * self.loaders):
            if ahead not in self._ahead:
                self._ahead[ahead] = self._pool.submit(self.make_batch, ahead)
        for stale in [b for b in self._ahead if b < batch]:  # never asked for now (set_epoch moved the stream on)
            del self._ahead[stale]
        return self._ahead.pop(batch).result()

    def process_loader(self):
        """The loader processes, started at the first batch asked for (batch_processes.py); None, after a note,
        where the shared memory cannot hold their batches (the threads load them then)."""
        if self._process_loader is None:
            from batch_processes import SHARED_MEMORY, BatchProcesses, slots_that_fit

            slots, needed, free = slots_that_fit(self, self.loaders)
            if slots is None:
                print(f"Note: {self.loaders} loader processes need {needed:.0f} MiB of shared memory and "
                      f"{SHARED_MEMORY} has {free:.0f} MiB free: loading with threads instead (a Docker container "
                      "takes --shm-size=2g, for example).", flush=True)  # fmt: skip
                self.processes = False
                return None
            self._process_loader = BatchProcesses(self, self.loaders, slots)
            self.bad_images = self._process_loader.bad_images  # the unreadable images the processes met
        return self._process_loader

    def stopped_loader(self):
        """Why a loader process died, or None: fit may raise it inside a backend's own error."""
        return None if self._process_loader is None else self._process_loader.stopped

    def close(self):
        """Stops the loader processes or threads (also done when the generator is collected)."""
        if self._process_loader is not None:
            self._process_loader.close()
            self._process_loader = None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
