"""Test instrument for the SLURM tests: hold a training job at known batches until it is signalled.

The scheduler's signals (``scancel --signal``, ``scontrol requeue``) come from outside the job, at
a time the test chooses; on a fast machine a small job could finish before the test sees it
running. :class:`PauseAtBatches` makes the point exact on any machine: at the end of each listed
batch it writes ``<run dir>/paused_at_<batch>`` and waits until rnnflow's interrupt callback has
received a signal (at most ``timeout`` seconds), so the run stops before the next batch. Nothing
of the training changes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L

from rnnflow.runtime.interrupt import InterruptCheckpoint


class PauseAtBatches(L.Callback):
    def __init__(self, batches: list[int], timeout: float = 300) -> None:
        self.batches = set(batches)
        self.timeout = timeout

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1  # the batch that just ran
        if step not in self.batches:
            return
        interrupt = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))
        (Path(trainer.default_root_dir) / f"paused_at_{step}").touch()
        deadline = time.monotonic() + self.timeout
        while not interrupt.requested and time.monotonic() < deadline:
            time.sleep(0.05)  # a signal interrupts the sleep and runs the handler
