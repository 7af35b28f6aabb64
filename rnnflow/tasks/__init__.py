"""Synthetic long-dependency tasks, by name (``task=<name>`` in the config).

=================  ===============================================  ==========================================
task               trivial baseline (loss)                          solved when
=================  ===============================================  ==========================================
adding             1/6 (standard), 1/24 (pascanu, hochreiter)       MSE < 0.01 / accuracy ≥ 0.99 (tolerance)
multiplication     7/144                                            MSE < 0.003 / accuracy ≥ 0.99 (tolerance)
copy               10 ln 8 / (T + 20)                               recall accuracy ≥ 0.99
temporal_order     ln 4 (bits=2), ln 8 (bits=3)                     accuracy ≥ 0.99
permutation        ln first_symbols (ln 2)                          accuracy ≥ 0.99
selective_copy     n_copy ln n_symbols / (T + n_copy)               recall accuracy ≥ 0.99
parity             ln 2                                             accuracy ≥ 0.99
=================  ===============================================  ==========================================
"""

from __future__ import annotations

import inspect
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


def task_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters of task ``name`` (``seq_len`` and the task-specific keys)."""
    parameters = inspect.signature(TASKS[name].__init__).parameters
    return {key: p for key, p in parameters.items() if key != "self"}


def build_task(name: str, **params: Any) -> SyntheticTask:
    """Instantiate the task called ``name`` with its parameters (``seq_len`` and task-specific keys).

    Raises ``ValueError`` with a one-line message naming the key (``task.<key>=…: expected …``) for an
    unknown task, an unknown or missing parameter, or an invalid or inconsistent value.
    """
    if name not in TASKS:
        raise ValueError(f"task.name={name!r}: expected one of {', '.join(sorted(TASKS))}")
    accepted = task_parameters(name)
    for key in params:
        if key not in accepted:
            raise ValueError(
                f"task.{key}: not a parameter of task {name}; expected one of {', '.join(accepted)}"
            )
    for key, parameter in accepted.items():
        if parameter.default is inspect.Parameter.empty and key not in params:
            raise ValueError(f"task.{key}: missing, task {name} needs it")
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
    "task_parameters",
]
