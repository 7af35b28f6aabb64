"""Test helper, loaded by training subprocesses: record the optimizer step after every batch.

``+callbacks.step_file._target_=step_file.StepFile +callbacks.step_file.path=<file>`` (with
``tests/`` on ``PYTHONPATH``) appends ``<global_step>`` to ``<file>`` at the end of each training
batch, unbuffered, before the checkpoint callback runs: after a SIGKILL the file's last line is
the last step the process completed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L


class StepFile(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, f"{trainer.global_step}\n".encode())
        finally:
            os.close(fd)


def last_step(path: str | os.PathLike) -> int | None:
    """The last step recorded in ``path`` (None if none yet)."""
    try:
        lines = Path(path).read_text().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines else None
