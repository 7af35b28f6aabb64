"""Gradient profiles rebuilt from the scalar tags ``grad_flow/layerL/norm_tNNNN``.

Each probe logs ‖∂L/∂h_t‖ (Frobenius norm over batch and hidden units of the total gradient
of the batch loss with respect to layer L's hidden state at step t) at a few log-spaced time
steps t (always 0 and T-1), one tag per t, all at the same training step. Stacking the tags
gives, per layer, a matrix ``norms[p, k] = ‖∂L/∂h_{t_k}‖`` at probe p (training step
``train_steps[p]``): its first row is the profile at initialisation, its last the profile at
the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rnnflow.report.runs import Run

NORM_TAG = re.compile(r"^grad_flow/layer(\d+)/norm_t(\d+)$")


@dataclass
class ProfileMatrix:
    """``norms`` ``(P, K)``: ‖∂L/∂h_t‖ at training steps ``train_steps`` (P) and time steps ``t`` (K)."""

    train_steps: np.ndarray
    t: np.ndarray
    norms: np.ndarray


def profile_layers(run: Run) -> list[int]:
    """The layer indices that have norm tags in ``run``."""
    return sorted({int(match.group(1)) for tag in run.scalars if (match := NORM_TAG.match(tag))})


def profile_matrix(run: Run, layer: int) -> ProfileMatrix | None:
    """All probes of ``layer`` as a matrix (NaN where a tag lacks a probe step); None without norm tags."""
    columns = {}
    for tag, series in run.scalars.items():
        match = NORM_TAG.match(tag)
        if match and int(match.group(1)) == layer:
            columns[int(match.group(2))] = series
    if not columns:
        return None
    t = np.array(sorted(columns))
    train_steps = np.unique(np.concatenate([series.steps for series in columns.values()]))
    norms = np.full((train_steps.size, t.size), np.nan)
    for k, time_step in enumerate(t):
        series = columns[int(time_step)]
        norms[np.searchsorted(train_steps, series.steps), k] = series.values
    return ProfileMatrix(train_steps=train_steps, t=t, norms=norms)


def profile_at(run: Run, layer: int, which: str) -> tuple[int, np.ndarray, np.ndarray] | None:
    """``(training step, t, norms)`` of the first (``which="init"``) or last (``"end"``) probe."""
    matrix = profile_matrix(run, layer)
    if matrix is None:
        return None
    row = {"init": 0, "end": -1}[which]
    return int(matrix.train_steps[row]), matrix.t, matrix.norms[row]
