"""The data stream: batches generated on the fly, a pure function of (seed, stream, rank, index).

The train loader yields batch *indices* ``0, 1, 2, …`` (an endless stream); the
validation loader yields ``0 … val_batches-1`` of a separate stream. Just before a batch
is moved to the device, :meth:`SyntheticDataModule.on_before_batch_transfer` draws it on
the model's device from a generator seeded with ``batch_seed(seed, stream, rank, index)``.

Consequences:

* the same seed gives the same stream (on CPU bit-for-bit);
* the validation set is fixed (its own stream) and independent of training length;
* resuming from a checkpoint restarts the train indices at the number of batches already
  trained (restored by Lightning's loop state), so the resumed run sees exactly the
  batches an uninterrupted run would have seen;
* under data parallelism each rank draws its own batches (``rank`` enters the seed).

This is written by hand rather than with a seeded ``DataLoader`` sampler because the
batches must be generated on the GPU and indexed by step for exact resumption.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from rnnflow.tasks import SyntheticTask, TaskBatch

TRAIN_STREAM = 0
VAL_STREAM = 1
_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def batch_seed(seed: int, stream: int, rank: int, index: int) -> int:
    """A well-mixed 63-bit generator seed for one batch."""
    value = 0
    for part in (seed, stream, rank, index):
        value = _splitmix64(value ^ part)
    return value & ((1 << 63) - 1)


class BatchIndices(IterableDataset):
    """Yields ``(stream, index)`` for ``index`` in ``[start, stop)`` (``stop=None``: endless)."""

    def __init__(self, stream: int, start: int = 0, stop: int | None = None) -> None:
        self.stream, self.start, self.stop = stream, start, stop

    def __len__(self) -> int:
        # A finite stream (validation) has a length, so Lightning knows its number of batches (its
        # restore fast-forwards a validation by that count; Lightning 2.5.0 fails on an unknown one).
        if self.stop is None:
            raise TypeError("an endless stream has no length")
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        index = self.start
        while self.stop is None or index < self.stop:
            yield self.stream, index
            index += 1


class SyntheticDataModule(L.LightningDataModule):
    """Train and validation streams of a :class:`SyntheticTask`, generated on the device."""

    def __init__(self, task: SyntheticTask, batch_size: int, val_batches: int, seed: int) -> None:
        super().__init__()
        self.task = task
        self.batch_size = batch_size
        self.val_batches = val_batches
        self.seed = seed

    def _batches_already_trained(self) -> int:
        if self.trainer is None:
            return 0
        # Batches whose training step ran. rnnflow checkpoints at the end of a batch, where Lightning
        # counts it as processed but not yet completed (its loop completes it on restore, later).
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed

    def train_dataloader(self) -> DataLoader:
        start = self._batches_already_trained()
        return DataLoader(BatchIndices(TRAIN_STREAM, start=start), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(BatchIndices(VAL_STREAM, stop=self.val_batches), batch_size=None)

    def make_batch(self, stream: int, index: int, device: torch.device, rank: int = 0) -> TaskBatch:
        """The batch ``index`` of ``stream``, drawn on ``device``."""
        generator = torch.Generator(device=device)
        # The validation set is the same on every rank.
        generator.manual_seed(batch_seed(self.seed, stream, rank if stream == TRAIN_STREAM else 0, index))
        return self.task.generate(self.batch_size, generator, device)

    def on_before_batch_transfer(self, batch: tuple[int, int], dataloader_idx: int) -> TaskBatch:
        stream, index = (int(value) for value in batch)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return self.make_batch(stream, index, device, rank)
