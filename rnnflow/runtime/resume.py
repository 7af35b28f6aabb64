"""Keep the TensorBoard step of a resumed run continuous.

Lightning logs at ``fit_loop.epoch_loop._batches_that_stepped``. Its ``ModelCheckpoint``
writes ``last.ckpt`` in ``on_train_end``, after that counter was incremented for the last
batch, and on restart the loop increments it once more (it assumes a checkpoint saved
before the increment). A run resumed from the end of an N-batch run would then log its
first batch at N + 1 instead of N. The number of completed batches, which the loop restores
exactly (the data stream restarts from it too), is the right value.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class ContinuousResumeStep(L.Callback):
    """At the first batch (after the loop's own restart logic ran), count the completed batches."""

    def __init__(self) -> None:
        self._corrected = False

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._corrected:
            return
        self._corrected = True
        loop = trainer.fit_loop.epoch_loop
        if trainer.accumulate_grad_batches == 1:
            loop._batches_that_stepped = loop.batch_progress.total.completed
