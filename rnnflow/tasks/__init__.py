"""Synthetic long-dependency tasks, by name (``task=<name>`` in the config)."""

from __future__ import annotations

from typing import Any

from rnnflow.tasks.adding import AddingTask
from rnnflow.tasks.base import ClassificationAtEnd, SyntheticTask, TaskBatch
from rnnflow.tasks.copy import CopyTask
from rnnflow.tasks.multiplication import MultiplicationTask
from rnnflow.tasks.parity import ParityTask
from rnnflow.tasks.permutation import PermutationTask
from rnnflow.tasks.selective_copy import SelectiveCopyTask
from rnnflow.tasks.temporal_order import TemporalOrderTask

TASKS: dict[str, type[SyntheticTask]] = {
    task.name: task
    for task in (
        AddingTask,
        CopyTask,
        MultiplicationTask,
        TemporalOrderTask,
        PermutationTask,
        SelectiveCopyTask,
        ParityTask,
    )
}


def build_task(name: str, **params: Any) -> SyntheticTask:
    """Instantiate the task called ``name`` with its task-specific ``params`` (e.g. ``seq_len``)."""
    if name not in TASKS:
        raise ValueError(f"task.name={name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name](**params)


__all__ = [
    "TASKS",
    "AddingTask",
    "ClassificationAtEnd",
    "CopyTask",
    "MultiplicationTask",
    "ParityTask",
    "PermutationTask",
    "SelectiveCopyTask",
    "SyntheticTask",
    "TaskBatch",
    "TemporalOrderTask",
    "build_task",
]
