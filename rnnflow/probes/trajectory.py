"""The forward trajectory of one fused layer call, recomputed for the explanatory probes.

A fused kernel keeps only its outputs ``u_t`` (kernel space, time-major ``(T, B, H)``). The
activation, gate, Lyapunov and credit probes need the quantities inside each step; this module
recomputes them from the layer's inputs ``x`` ``(T, B, I)``, outputs ``u``, initial state
``u_{-1}`` ``(B, H)`` (and ``c_{-1}``) with batched GEMMs over all steps (no per-step loop
except the LSTM's cell-state scan):

* every cell: ``previous`` = ``u_{t-1}`` ``(T, B, H)`` (``u_{-1}`` first);
* LSTM (gates ``i f g o``): pre-activations ``a_t = W_ih x_t + b_ih + W_hh u_{t-1} + b_hh``
  ``(T, B, 4H)``, the cell states ``c_t = σ(a^f_t) ⊙ c_{t-1} + σ(a^i_t) ⊙ tanh(a^g_t)`` ``(T, B, H)``
  (a reverse-free forward scan) and ``c_{t-1}``;
* GRU (gates ``r z n``): ``a^r, a^z`` as above, ``a^n_t = W_in x_t + b_in + r_t ⊙ m_t`` with the
  recurrent part ``m_t = W_hn u_{t-1} + b_hn`` ``(T, B, H)`` kept apart (it is what ``r`` gates);
  ``preactivations`` is ``(T, B, 3H)`` ``[a^r | a^z | a^n]``.
* RNN: nothing beyond ``previous``: the derivative of ``tanh``/``relu`` is a function of ``u``.
* LSTM and GRU: ``gate_values``, the gates after their nonlinearity ``(T, B, G·H)`` (``σ`` of
  ``i f o`` / ``r z``, ``tanh`` of ``g`` / ``n``), computed once here and read by every instrument
  (a ``tanh`` over a strided gate block takes ~3.5× as long as over a contiguous one on the CPU).

The user-facing nonlinearity and state: ``h_t = s·u_t + c`` with ``(s, c) = (out_scale,
out_shift)`` of the :class:`FusedSpec` (``(1, 0)`` except the sigmoid RNN, ``(½, ½)``, whose
pre-activation is ``a'_t = a_t / s``).

Everything is computed in the dtype of ``u`` promoted to at least float32.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rnnflow.models.fused import FusedSpec


@dataclass
class Trajectory:
    """The inside of every step of one layer call, time-major; see the module docstring."""

    spec: FusedSpec
    inputs: torch.Tensor  # x, (T, B, I)
    outputs: torch.Tensor  # u, (T, B, H)
    previous: torch.Tensor  # u_{t-1}, (T, B, H)
    preactivations: torch.Tensor | None = None  # lstm (T, B, 4H) i f g o; gru (T, B, 3H) r z n
    cells: torch.Tensor | None = None  # lstm c_t, (T, B, H)
    previous_cells: torch.Tensor | None = None  # lstm c_{t-1}, (T, B, H)
    recurrent_n: torch.Tensor | None = None  # gru m_t = W_hn u_{t-1} + b_hn, (T, B, H)
    gate_values: torch.Tensor | None = None  # lstm σ(i) σ(f) tanh(g) σ(o); gru σ(r) σ(z) tanh(n)

    @property
    def steps(self) -> int:
        return self.outputs.size(0)

    def head(self, samples: int) -> Trajectory:
        """The trajectory of the first ``samples`` samples (views; every quantity is per sample)."""
        if samples >= self.outputs.size(1):
            return self

        def cut(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[:, :samples]

        return Trajectory(self.spec, *(cut(getattr(self, f.name)) for f in fields(self)[1:]))

    def gate(self, index: int) -> torch.Tensor:
        """Pre-activation block ``index`` (gate order ``i f g o`` / ``r z n``), ``(T, B, H)``."""
        assert self.preactivations is not None, "the rnn cell has no gates"
        hidden = self.spec.hidden_size
        return self.preactivations[..., index * hidden : (index + 1) * hidden]

    def gate_value(self, index: int) -> torch.Tensor:
        """Gate ``index`` after its nonlinearity (``σ``, or ``tanh`` for ``g`` / ``n``), ``(T, B, H)``."""
        assert self.gate_values is not None, "the rnn cell has no gates"
        hidden = self.spec.hidden_size
        return self.gate_values[..., index * hidden : (index + 1) * hidden]


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


def previous_states(outputs: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``u_{t-1}`` for ``t = 0 … T-1``: ``(T, B, H)`` with ``u_{-1} = initial`` ``(B, H)``."""
    return torch.cat([initial.unsqueeze(0).to(outputs.dtype), outputs[:-1]])


def recompute(
    spec: FusedSpec,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    initial: torch.Tensor,
    initial_cell: torch.Tensor | None = None,
) -> Trajectory:
    """The :class:`Trajectory` of a layer call from its time-major tensors (detached, no grad)."""
    dtype = compute_dtype(outputs)
    with torch.no_grad():
        x = inputs.detach().to(dtype)
        u = outputs.detach().to(dtype)
        previous = previous_states(u, initial.detach())
        trajectory = Trajectory(spec, x, u, previous)
        if spec.cell == "rnn":
            return trajectory
        hidden = spec.hidden_size
        w_ih, w_hh = (w.detach().to(dtype) for w in spec.weights[:2])
        steps, batch, _ = u.shape
        flat_x, flat_prev = x.reshape(-1, x.size(-1)), previous.reshape(-1, hidden)
        if spec.has_bias:
            b_ih, b_hh = (b.detach().to(dtype) for b in spec.weights[2:4])
            from_input = torch.addmm(b_ih, flat_x, w_ih.T)
            from_state = torch.addmm(b_hh, flat_prev, w_hh.T)
        else:
            from_input, from_state = flat_x @ w_ih.T, flat_prev @ w_hh.T
        if spec.cell == "lstm":
            preactivations = from_input.add_(from_state).view(steps, batch, 4 * hidden)
            values = _gate_values(preactivations, candidate=2, hidden=hidden)
            i, f, g = (values[..., k * hidden : (k + 1) * hidden] for k in range(3))
            drive, forget = i * g, f
            cells = torch.empty_like(u)
            c = (
                torch.zeros_like(u[0])
                if initial_cell is None
                else initial_cell.detach().to(dtype).expand_as(u[0])
            )
            # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t: one fused multiply-add per step (unbind views).
            before = c
            for f_t, d_t, c_t in zip(forget.unbind(0), drive.unbind(0), cells.unbind(0), strict=True):
                torch.addcmul(d_t, f_t, before, out=c_t)
                before = c_t
            trajectory.preactivations = preactivations
            trajectory.gate_values = values
            trajectory.cells = cells
            trajectory.previous_cells = torch.cat([c.unsqueeze(0), cells[:-1]])
            return trajectory
        # GRU: a^n needs r ⊙ (W_hn u_{t-1} + b_hn), the recurrent part of n kept apart.
        from_input = from_input.view(steps, batch, 3 * hidden)
        from_state = from_state.view(steps, batch, 3 * hidden)
        recurrent_n = from_state[..., 2 * hidden :].clone()
        preactivations = from_input
        preactivations[..., : 2 * hidden] += from_state[..., : 2 * hidden]
        reset = torch.sigmoid(preactivations[..., :hidden])
        preactivations[..., 2 * hidden :].addcmul_(reset, recurrent_n)
        trajectory.preactivations = preactivations
        trajectory.gate_values = _gate_values(preactivations, candidate=2, hidden=hidden)
        trajectory.recurrent_n = recurrent_n
        return trajectory


def _gate_values(preactivations: torch.Tensor, candidate: int, hidden: int) -> torch.Tensor:
    """``σ`` of every gate block, ``tanh`` of block ``candidate``: ``(T, B, G·H)``, contiguous."""
    values = torch.sigmoid(preactivations)
    block = slice(candidate * hidden, (candidate + 1) * hidden)
    # tanh over a contiguous copy of the block: the strided one takes the CPU's scalar path.
    values[..., block] = torch.tanh(preactivations[..., block].contiguous())
    return values


def hidden_scale(spec: FusedSpec) -> tuple[float, float]:
    """``(s, c)`` of ``h = s·u + c`` (see the module docstring)."""
    return spec.out_scale, spec.out_shift
