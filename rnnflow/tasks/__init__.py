"""Synthetic long-dependency tasks, by name (``task=<name>`` in the config)."""

from __future__ import annotations

from typing import Any

from rnnflow.tasks.adding import AddingTask
from rnnflow.tasks.base import SyntheticTask, TaskBatch
from rnnflow.tasks.copy import CopyTask

TASKS: dict[str, type[SyntheticTask]] = {
    "adding": AddingTask,
    "copy": CopyTask,
}


def build_task(name: str, **params: Any) -> SyntheticTask:
    """Instantiate the task called ``name`` with its task-specific ``params`` (e.g. ``seq_len``)."""
    if name not in TASKS:
        raise ValueError(f"task.name={name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name](**params)


__all__ = ["TASKS", "AddingTask", "CopyTask", "SyntheticTask", "TaskBatch", "build_task"]
