"""The recomputed trajectory of a probed layer call, shared by the listeners that need it.

The activation, gate, Lyapunov and credit instruments all need the gate pre-activations of the
same layer call (one GEMM over all steps; for the LSTM also the cell-state scan). Listeners are
called one after the other with the same :class:`LayerBackward`; :func:`shared_trajectory` keeps
the last result (one entry) so that it is computed once per layer call and freed with the next. A
request for fewer samples than the entry holds is served by its first samples
(:meth:`Trajectory.head`): every quantity of the trajectory is per sample.
"""

from __future__ import annotations

from rnnflow.probes.gradient_flow import LayerBackward
from rnnflow.probes.trajectory import Trajectory, recompute

_last: tuple[int, int, LayerBackward, Trajectory] | None = None


def sub_batch(layer: LayerBackward, sequences: int | None) -> LayerBackward:
    """The layer call restricted to its first ``sequences`` samples (None: all)."""
    if sequences is None or sequences >= layer.outputs.size(1):
        return layer
    n = sequences

    def cut(tensor):
        return None if tensor is None else (tensor[:, :n] if tensor.dim() == 3 else tensor[:n])

    return LayerBackward(
        layer.name,
        layer.spec,
        cut(layer.inputs),
        cut(layer.outputs),
        cut(layer.initial),
        cut(layer.initial_cell),
        cut(layer.hidden_grad),
        cut(layer.cell_grad),
    )


def shared_trajectory(layer: LayerBackward, sequences: int | None = None) -> Trajectory:
    """:func:`rnnflow.probes.trajectory.recompute` of ``layer``'s first ``sequences`` samples, cached."""
    global _last
    wanted = layer.outputs.size(1) if sequences is None else min(sequences, layer.outputs.size(1))
    if _last is not None and _last[0] == id(layer) and _last[2] is layer and _last[1] >= wanted:
        return _last[3].head(wanted)
    part = sub_batch(layer, wanted)
    trajectory = recompute(part.spec, part.inputs, part.outputs, part.initial, part.initial_cell)
    _last = (id(layer), wanted, layer, trajectory)
    return trajectory


def release() -> None:
    """Drop the cached trajectory (at the end of a probe step)."""
    global _last
    _last = None
