"""Exact total gradient ∂L/∂h_t at every step of every layer, from one fused call per layer.

Notation for one layer (batch B, steps T, hidden H, gates G: 1 rnn, 4 lstm ``i f g o``,
3 gru ``r z n``): input ``x_t`` ``(B, I)``, hidden state ``h_t`` ``(B, H)``, gate
pre-activations ``a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` ``(B, G·H)`` and
``δ_t = ∂L/∂a_t`` (total: every path through later steps and higher layers).

The total gradient of the loss with respect to a hidden state is

    ∂L/∂h_{t-1} = d_{t-1} + J_tᵀ ∂L/∂h_t ,

where ``d_{t-1}`` is the *direct* gradient (from the head and the layer above, what
a gradient hook on the fused output sees) and ``J_tᵀ`` the step's transposed Jacobian.
A fused kernel hides ``J_tᵀ ∂L/∂h_t``. We recover it exactly with a zero extra input
``e_t`` ``(B, K)`` whose input-weight block is a constant ``A`` ``(G·H, K)``
(input ``[x_t | e_t]``, input weights ``[W_ih | A]``), so that after backward
``∂L/∂e_t = Aᵀ δ_t``:

* rnn, lstm: ``A = W_hh`` (K = H) gives ``W_hhᵀ δ_t``, the whole recurrent term, so
  ``∂L/∂h_{t-1} = d_{t-1} + ∂L/∂e_t``.
* gru: ``h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}``, ``n_t = tanh(W_in x_t + b_in +
  r_t ⊙ (W_hn h_{t-1} + b_hn))``, hence
  ``∂L/∂h_{t-1} = d_{t-1} + W_hrᵀ δ^r_t + W_hzᵀ δ^z_t + W_hnᵀ (δ^n_t ⊙ r_t) + z_t ⊙ ∂L/∂h_t``.
  ``A = [[W_hr, 0], [W_hz, 0], [0, I]]`` (K = 2H) gives ``(W_hrᵀ δ^r_t + W_hzᵀ δ^z_t, δ^n_t)``;
  ``r_t, z_t`` are recomputed over all steps (two GEMMs: the ``x`` and the ``h_{t-1}``
  part), and the ``z ⊙`` term is a reverse linear scan.

For the LSTM cell state (the "constant error carousel"), with ``c_t = f_t ⊙ c_{t-1} +
i_t ⊙ g_t`` and ``h_t = o_t ⊙ tanh(c_t)``:

    ∂L/∂c_t = ∂L/∂h_t ⊙ o_t ⊙ (1 - tanh² c_t) + f_{t+1} ⊙ ∂L/∂c_{t+1},

a reverse linear scan; ``f, o`` are recomputed (block by block of steps, two GEMMs each)
and ``tanh c_t = h_t / o_t``.

Everything runs in the fused kernels' own time-major layout ``(T, B, ·)``: the extra input
is built there, the kernel is called time-major (its output is what a ``batch_first`` layer
returns transposed anyway), and ``u_{t-1}`` for all t is then a contiguous slice of ``u``.

The parameter gradients are those of the plain fused call (``A`` is a constant and ``e = 0``),
up to float rounding in the input GEMM.

The reported profile is the Frobenius norm over batch and units,
``n_t = ‖∂L/∂h_t‖_F = (Σ_b Σ_j (∂L/∂h_{t,b,j})²)^½``, shape ``(T,)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import nn

from rnnflow.models.fused import FusedSpec, State, fused_spec, initial_state, run_fused
from rnnflow.probes.adjoint import AdjointRecord, adjoint_call, supports_adjoint
from rnnflow.probes.recurrent_modules import (
    LayerKey,
    find_recurrent_modules,
    layer_keys,
    run_layer_by_layer,
)
from rnnflow.probes.recurrent_modules import short_names as tag_names


@dataclass
class ProbeGradients:
    """What the backward pass hands a probed call, time-major; None until it arrives.

    References to autograd's own gradient tensors, taken by hooks: no ``retain_grad`` copy.
    """

    width: int  # K, the extra input's width
    direct: torch.Tensor | None = None  # ∂L/∂u from above (head, next layer), (T, B, H)
    extra: torch.Tensor | None = None  # ∂L/∂e = Aᵀ δ, (T, B, K)
    final_hidden: torch.Tensor | None = None  # ∂L/∂u_{T-1} through the returned final state, (1, B, H)
    final_cell: torch.Tensor | None = None  # ∂L/∂c_{T-1} through the returned final cell state (LSTM)

    def keep_direct(self, grad: torch.Tensor) -> None:
        self.direct = grad

    def keep_final_hidden(self, grad: torch.Tensor) -> None:
        self.final_hidden = grad

    def keep_final_cell(self, grad: torch.Tensor) -> None:
        self.final_cell = grad


@dataclass
class ProbedLayer:
    """What one probed fused call keeps for the post-backward computation."""

    spec: FusedSpec
    inputs: torch.Tensor  # x, as fed to the layer
    initial_hidden: torch.Tensor  # u_{-1}, (1, B, H): the state the call started from
    raw_output: torch.Tensor  # u, time-major (T, B, H)
    gradients: ProbeGradients


class _ZeroExtraInput(torch.autograd.Function):
    """The fused call's input ``[x_t | e_t]`` with ``e = 0`` (width ``sink.width``), built time-major.

    Time-major is the fused kernels' own layout, so the kernel neither copies this
    ``(T, B, I+K)`` input nor transposes its gradient, and ``∂L/∂e`` is kept as a view of
    the kernel's input gradient in ``sink.extra`` (no leaf tensor, no accumulation copy).
    ``anchor`` is a zero-size leaf that requires grad: it makes autograd call this backward
    even when ``x`` needs no gradient (a first layer).
    """

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        anchor: torch.Tensor,
        batch_first: bool,
        sink: ProbeGradients,
    ) -> torch.Tensor:
        x = inputs.transpose(0, 1) if batch_first else inputs
        combined = x.new_zeros(*x.shape[:-1], x.size(-1) + sink.width)
        combined[..., : x.size(-1)] = x
        ctx.size, ctx.batch_first, ctx.sink = x.size(-1), batch_first, sink
        return combined

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        ctx.sink.extra = grad[..., ctx.size :]
        grad_x = grad[..., : ctx.size]
        return (grad_x.transpose(0, 1) if ctx.batch_first else grad_x), None, None, None


@dataclass
class LayerGradientFlow:
    """Per-step total gradient norms of one layer.

    Attributes:
        hidden: ``(T,)`` ``‖∂L/∂h_t‖_F``.
        cell: ``(T,)`` ``‖∂L/∂c_t‖_F`` (LSTM only, else None).
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None = None


def _extra_block(spec: FusedSpec) -> torch.Tensor:
    """The constant input block ``A`` of the module docstring, ``(G·H, K)``."""
    w_hh = spec.weights[1].detach()
    if spec.cell != "gru":
        return w_hh
    hidden = spec.hidden_size
    w_hr, w_hz, _ = w_hh.split(hidden, dim=0)
    zeros = w_hh.new_zeros(hidden, hidden)
    eye = torch.eye(hidden, dtype=w_hh.dtype, device=w_hh.device)
    return torch.cat(
        [torch.cat([w_hr, zeros], 1), torch.cat([w_hz, zeros], 1), torch.cat([zeros, eye], 1)], 0
    )


PROBE_ROUTES = ("auto", "extra_input", "adjoint")


def choose_route(spec: FusedSpec, device: torch.device, route: str = "auto") -> str:
    """``auto`` picks what ``scripts/bench.py`` measured to be cheaper on each device.

    CPU (torch 2.13, T = 1000, H = 128, B = 64, probed step / plain step, one thread, CPU time,
    three runs): the adjoint route costs RNN 0.65-0.68x, GRU 0.71-0.81x, LSTM 1.40-1.57x against
    extra input 1.12-1.21x, 1.45-1.64x, 1.77-1.80x: the
    extra input's three ``T·B × G·H × H`` GEMMs (forward, input gradient, weight gradient) cost
    more than a hand-written backward, and the fused RNN/GRU backwards (autograd over per-step
    ATen ops) are slower than the adjoint's batched one. On a GPU the extra input is one
    parallel GEMM beside cuDNN, while the adjoint's per-step loop would be launch-bound; mixed
    precision keeps the fused kernels (the adjoint works in the weights' dtype). The LSTM's adjoint
    runs its forward as its own loop, whose outputs differ from the fused kernel's in the last bits:
    then a probed step would not compute the loss an unprobed one does, and a run's metrics would
    depend on which steps it probed (a resumed run probes its first segment's last step). Hence
    ``auto`` = adjoint for the RNN and GRU on the CPU (fused forward, outputs bit-identical), extra
    input for the LSTM (fused forward and backward: outputs and gradients bit-identical) and on
    other devices.
    """
    if route == "extra_input" or not supports_adjoint(spec) or torch.is_autocast_enabled(device.type):
        return "extra_input"
    if route == "adjoint" or (device.type == "cpu" and spec.cell != "lstm"):
        return "adjoint"
    return "extra_input"


def probed_layer_call(
    layer: nn.Module, inputs: torch.Tensor, state: State | None = None, route: str = "extra_input"
) -> tuple[torch.Tensor, State, ProbedLayer | AdjointRecord]:
    """Run ``layer`` like ``layer(inputs, state)``, keeping what the probe needs: ``(h, final, record)``.

    ``route``: ``extra_input`` (fused forward and backward, zero extra input; any cell),
    ``adjoint`` (forward, then a hand-written backward; rnn, lstm, gru with biases), or ``auto``.
    """
    return probed_call(fused_spec(layer), inputs, state, route)


def probed_call(
    spec: FusedSpec, inputs: torch.Tensor, state: State | None = None, route: str = "extra_input"
) -> tuple[torch.Tensor, State, ProbedLayer | AdjointRecord]:
    """:func:`probed_layer_call` for the fused call ``spec`` describes."""
    start = initial_state(spec, inputs) if state is None else state
    if choose_route(spec, inputs.device, route) == "adjoint":
        raw, final, record = adjoint_call(spec, inputs, start)
    else:
        block = _extra_block(spec)
        sink = ProbeGradients(block.size(1))
        anchor = inputs.new_empty(0, requires_grad=torch.is_grad_enabled())
        combined = _ZeroExtraInput.apply(inputs, anchor, spec.batch_first, sink)
        weights = [torch.cat([spec.weights[0], block], dim=1), *spec.weights[1:]]
        time_major = replace(spec, weights=weights, batch_first=False)
        raw, final = run_fused(time_major, combined, state=start, raw_output=True)
        if raw.requires_grad:
            raw.register_hook(sink.keep_direct)
            # A loss that reads the final state (``out, h_n = rnn(x)``; ``head(h_n[-1])``) reaches
            # u_{T-1} (and c_{T-1}) through it, besides the output.
            final_hidden, final_cell = final if isinstance(final, tuple) else (final, None)
            final_hidden.register_hook(sink.keep_final_hidden)
            if final_cell is not None:
                final_cell.register_hook(sink.keep_final_cell)
        start_hidden = start[0] if isinstance(start, tuple) else start
        record = ProbedLayer(spec, inputs.detach(), start_hidden.detach(), raw, sink)
        raw = raw.transpose(0, 1) if spec.batch_first else raw  # the layout nn.RNN returns too
    hidden = raw if spec.out_scale == 1.0 and spec.out_shift == 0.0 else raw * spec.out_scale + spec.out_shift
    return hidden, final, record


def _time_major(tensor: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return tensor.transpose(0, 1) if batch_first else tensor


GateWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]

_BLOCK_ELEMENTS = 1 << 18
"""Size of a ``(steps, B, H)`` block of the LSTM's cell-gradient pass (1 MiB in float32): the
block's gates and temporaries stay in cache and their buffers are reused from block to block."""


def _gate_weights(spec: FusedSpec, gates: list[int], dtype: torch.dtype) -> GateWeights:
    """``(W_ih, W_hh, b_ih + b_hh or None)``, the rows of the listed gate blocks, in ``dtype``."""
    hidden = spec.hidden_size
    rows = torch.cat([torch.arange(g * hidden, (g + 1) * hidden) for g in gates]).to(spec.weights[0].device)
    w_ih, w_hh = (w.detach().to(dtype)[rows] for w in spec.weights[:2])
    bias = (spec.weights[2].detach() + spec.weights[3].detach()).to(dtype)[rows] if spec.has_bias else None
    return w_ih, w_hh, bias


def _gate_preactivations(
    weights: GateWeights,
    x: torch.Tensor,
    u: torch.Tensor,
    initial: torch.Tensor,
    start: int,
    stop: int,
    out: torch.Tensor,
) -> torch.Tensor:
    """``W_ih x_t + b_ih + W_hh u_{t-1} + b_hh`` (the rows of ``weights``) for ``start ≤ t < stop``.

    Time-major ``x`` ``(T, B, I)``, ``u`` ``(T, B, H)``, ``initial`` = ``u_{-1}`` ``(B, H)``;
    written into ``out`` ``((stop - start)·B, R)`` by two GEMMs (the input part, then the
    recurrent part added in place: no concatenated ``[x | u]`` copy), returned as
    ``(stop - start, B, R)``.
    """
    w_ih, w_hh, bias = weights
    batch = u.size(1)
    inputs = x[start:stop].reshape(-1, x.size(-1))
    if bias is None:
        torch.mm(inputs, w_ih.T, out=out)
    else:
        torch.addmm(bias, inputs, w_ih.T, out=out)
    if start == 0:  # u_{-1} is the initial state
        out[:batch].addmm_(initial, w_hh.T)
        out[batch:].addmm_(u[: stop - 1].flatten(0, 1), w_hh.T)
    else:
        out.addmm_(u[start - 1 : stop - 1].flatten(0, 1), w_hh.T)
    return out.view(stop - start, batch, -1)


def _reverse_scan_(
    values: torch.Tensor,
    decay: torch.Tensor,
    after: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """In place: ``y_t = values_t + decay_{t+1} ⊙ y_{t+1}`` over a time-major block ``(n, …)``.

    ``after = (y_n, decay_n)``, the step after the block, continues a scan from a later block
    (the block's last row gets ``decay_n ⊙ y_n``); without it ``y_{n-1} = values_{n-1}``.
    A loop of in-place fused multiply-adds over ``unbind`` views (indexing ``x[t]`` in a loop
    that autograd records is O(T²): each select's backward allocates a full-size zero tensor; no
    autograd here, but unbind is as cheap).
    """
    rows, decays = values.unbind(0), decay.unbind(0)
    if after is not None:
        rows[-1].addcmul_(after[1], after[0])
    for t in range(len(rows) - 2, -1, -1):
        rows[t].addcmul_(decays[t + 1], rows[t + 1])
    return values


def _lstm_cell_grad(
    spec: FusedSpec,
    x: torch.Tensor,
    u: torch.Tensor,
    initial: torch.Tensor,
    dh: torch.Tensor,
    final_cell: torch.Tensor | None = None,
) -> torch.Tensor:
    """``∂L/∂c_t`` for all t (time-major ``(T, B, H)``) from the states and ``∂L/∂h_t``.

    ``final_cell``: ``∂L/∂c_{T-1}`` arriving through the returned final cell state ``(B, H)``, if any.

    ``c_t`` itself is never needed: ``h_t = o_t ⊙ tanh(c_t)`` gives ``tanh(c_t) = h_t / o_t``
    (``o_t > 0``; where ``o_t`` underflows to 0, ``h_t = 0`` and the term vanishes), so
    ``o_t ⊙ (1 - tanh² c_t) = o_t - h_t ⊙ (h_t / o_t)``. Only the ``f`` and ``o`` gates are
    recomputed. The pass runs block by block from the last step (blocks of about
    ``_BLOCK_ELEMENTS``): per block, its ``f, o`` (two GEMMs), the drive
    ``∂L/∂h_t ⊙ o_t (1 - tanh² c_t)`` written into the result, then the reverse scan
    ``∂L/∂c_t = drive_t + f_{t+1} ⊙ ∂L/∂c_{t+1}`` through the block, continued from the block
    after it.
    """
    steps, batch, hidden = u.shape
    weights = _gate_weights(spec, [1, 3], u.dtype)
    block = max(1, min(steps, _BLOCK_ELEMENTS // (batch * hidden)))
    gates = u.new_empty(block * batch, 2 * hidden)
    through_tanh, safe_o = u.new_empty(block, batch, hidden), u.new_empty(block, batch, hidden)
    tiny = torch.finfo(u.dtype).tiny
    dc = torch.empty_like(u)
    after = None if final_cell is None else (final_cell, torch.ones_like(final_cell))
    for stop in range(steps, 0, -block):
        start = max(0, stop - block)
        n = stop - start
        preactivations = _gate_preactivations(weights, x, u, initial, start, stop, gates[: n * batch])
        f, o = preactivations.sigmoid_().chunk(2, dim=-1)
        drive = through_tanh[:n]
        torch.div(u[start:stop], torch.clamp_min(o, tiny, out=safe_o[:n]), out=drive)  # tanh c_t
        torch.addcmul(o, u[start:stop], drive, value=-1, out=drive)  # o_t - h_t tanh c_t
        torch.mul(dh[start:stop], drive, out=dc[start:stop])
        _reverse_scan_(dc[start:stop], f, after)
        after = (dc[start], f[0].clone())  # f's buffer is the next block's
    return dc


def total_hidden_gradients(
    record: ProbedLayer | AdjointRecord, grad_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """After backward: ``(∂L/∂h, ∂L/∂c or None)``, time-major ``(T, B, H)``, float32 or wider.

    ``grad_scale`` divides out a loss scale (mixed precision's GradScaler). Everything is
    computed in the fused kernel's own time-major layout, where ``u_{t-1}`` for all t is a
    contiguous slice of ``u``.
    """
    spec = record.spec
    if isinstance(record, AdjointRecord):
        du, dc = record.gradients()
        # The record's own buffers, copied only where a scale divides them.
        if spec.out_scale * grad_scale != 1.0:
            du = du / (spec.out_scale * grad_scale)
        if dc is not None and grad_scale != 1.0:
            dc = dc / grad_scale
        return du, dc
    hidden = spec.hidden_size
    # At least float32 (half-precision runs), float64 stays float64 (tests).
    dtype = torch.promote_types(record.raw_output.dtype, torch.float32)
    with torch.no_grad():
        u = record.raw_output.detach().to(dtype)
        x = _time_major(record.inputs, spec.batch_first).to(dtype)
        initial = record.initial_hidden[0].to(dtype)
        # Gradients that never arrived (no loss reached this call, e.g. a TBPTT chunk without
        # targets, or none reached the output) read as zeros.
        gradients = record.gradients
        zeros = u.new_zeros(()).expand(*u.shape[:-1], gradients.width)
        direct = zeros[..., :hidden] if gradients.direct is None else gradients.direct
        extra = zeros if gradients.extra is None else gradients.extra.to(dtype)
        # ∂L/∂u_{t-1} = d_{t-1} + (Aᵀ δ_t)[:H]  (the recurrent term of step t), ∂L/∂u_{T-1} = d_{T-1}.
        du = torch.empty_like(u)
        torch.add(direct[:-1], extra[1:, :, :hidden], out=du[:-1])
        du[-1] = direct[-1]
        if gradients.final_hidden is not None:
            du[-1] += gradients.final_hidden[0].to(dtype)
        if spec.cell == "gru":
            steps, batch, _ = u.shape
            buffer = u.new_empty(steps * batch, 2 * hidden)
            weights = _gate_weights(spec, [0, 1], dtype)
            r, z = _gate_preactivations(weights, x, u, initial, 0, steps, buffer).sigmoid_().chunk(2, dim=-1)
            w_hn = spec.weights[1].detach().to(dtype)[2 * hidden :]
            du[:-1].view(-1, hidden).addmm_((extra[1:, :, hidden:] * r[1:]).flatten(0, 1), w_hn)
            _reverse_scan_(du, z)
        final_cell = None if gradients.final_cell is None else gradients.final_cell[0].to(dtype)
        dc = _lstm_cell_grad(spec, x, u, initial, du, final_cell) if spec.cell == "lstm" else None
        # h = s·u + c  ⇒  ∂L/∂h = ∂L/∂u / s.
        scale = spec.out_scale * grad_scale
        if scale != 1.0:
            du /= scale
        if dc is not None and grad_scale != 1.0:
            dc /= grad_scale
    return du, dc


_NORM_BLOCK_ELEMENTS = 1 << 20
"""Size of a block of steps converted to float64 by :func:`frobenius_per_step` on the CPU (8 MiB):
it bounds the temporary memory while keeping the number of small ops low (at T = 1000, B = 64,
H = 128: 8 blocks, ~3.5 ms against ~1 ms for squaring in float32; 1 MiB blocks, 63 of them, paid
a per-op overhead that dominated on a loaded machine)."""


def frobenius_per_step(gradients: torch.Tensor) -> torch.Tensor:
    """``(T, B, H)`` → ``(T,)`` float64: ``n_t = (Σ_b Σ_j g_{t,b,j}²)^½`` at each step, without underflow.

    Squaring in the gradients' own dtype loses what rnnflow exists to show: a float32 (or bf16)
    entry below ~1.1e-19 squares below float32's smallest normal number (1.2e-38), one below
    ~1e-23 to exactly 0, and one above ~1.8e19 to inf; a step with ``n_t`` ≈ 1e-20 read as 0.
    Every float32, bf16 and fp16 value (magnitudes 1.4e-45 … 3.4e38) squares into float64's normal
    range (2e-90 … 1.2e77), so the squares are summed in float64: ``n_t`` is the norm of the
    stored entries to float64 rounding, zero exactly when every entry of the step is zero.
    Float64 gradients (whose squares underflow below 1e-154) and devices without float64 are
    scaled by each step's largest magnitude first, :func:`_scaled_frobenius_per_step`.
    """
    if gradients.dtype == torch.float64 or gradients.device.type == "mps":
        return _scaled_frobenius_per_step(gradients).double()
    if gradients.device.type != "cpu":
        # One reduction kernel converting on the fly, memory-bound on a GPU.
        return torch.linalg.vector_norm(gradients, dim=(1, 2), dtype=torch.float64)
    # On the CPU vector_norm(dtype=float64) converts element by element, several times slower than
    # converting blocks of steps with a vectorised copy into a reused buffer and reducing those.
    steps = gradients.size(0)
    per_step = gradients.numel() // steps if steps else 1
    rows = max(1, min(steps, _NORM_BLOCK_ELEMENTS // max(1, per_step)))
    block = torch.empty(rows, *gradients.shape[1:], dtype=torch.float64)
    norms = torch.empty(steps, dtype=torch.float64)
    for start in range(0, steps, rows):
        stop = min(start + rows, steps)
        converted = block[: stop - start].copy_(gradients[start:stop])
        torch.linalg.vector_norm(converted, dim=(1, 2), out=norms[start:stop])
    return norms


def _scaled_frobenius_per_step(gradients: torch.Tensor) -> torch.Tensor:
    """``n_t = m_t ‖g_t / m_t‖_F`` with ``m_t = max |g_t|``, in the gradients' dtype (no under/overflow).

    Every ``|g_t / m_t| ≤ 1`` and the largest is 1, so the sum of squares lies in ``[1, B·H]``:
    an entry whose square underflows here (ratio to the largest below ~1e-154 in float64, ~1e-19
    in float32) changes ``n_t`` by far less than the dtype's rounding. A step of zeros gives 0, one
    holding inf or nan gives inf or nan.
    """
    largest = torch.linalg.vector_norm(gradients, ord=float("inf"), dim=(1, 2))
    scale = torch.where((largest > 0) & torch.isfinite(largest), largest, torch.ones_like(largest))
    scaled = torch.linalg.vector_norm(gradients / scale[:, None, None], dim=(1, 2)) * scale
    return torch.where(torch.isfinite(largest), scaled, largest)


@dataclass
class LayerBackward:
    """One probed layer call after its backward: what an instrument may need, time-major.

    Handed to the probe's consumers (:meth:`GradientFlowProbe.add_consumer`) before the tensors are
    freed. Kernel space (``u``; ``h = out_scale·u + out_shift``, the identity but for the sigmoid RNN).

    Attributes:
        name: the layer's full name (``"model.layers/layer0"``, ``"rnn/layer1_reverse"``).
        spec: the single-layer fused call (kernel, weights ``[W_ih, W_hh, b_ih, b_hh]``, sizes).
        inputs: ``x`` ``(T, B, I)``, detached (a reverse direction's in its own processing order).
        outputs: ``u`` ``(T, B, H)``, detached.
        initial: ``u_{-1}`` ``(B, H)``; ``initial_cell``: ``c_{-1}`` ``(B, H)`` (LSTM) or None.
        hidden_grad: total ``∂L/∂h_t`` ``(T, B, H)`` (float32 or wider).
        cell_grad: total ``∂L/∂c_t`` ``(T, B, H)`` (LSTM) or None.
        hidden_norms: the probe's own ``(T,)`` float64 ``‖∂L/∂h_t‖_F`` (:func:`frobenius_per_step`),
            handed over so that no consumer reduces ``hidden_grad`` again; None on a sub-batch.
        cell_norms: the same for ``∂L/∂c_t`` (LSTM) or None.
    """

    name: str
    spec: FusedSpec
    inputs: torch.Tensor
    outputs: torch.Tensor
    initial: torch.Tensor
    initial_cell: torch.Tensor | None
    hidden_grad: torch.Tensor
    cell_grad: torch.Tensor | None
    hidden_norms: torch.Tensor | None = None
    cell_norms: torch.Tensor | None = None

    def hidden_profile(self) -> torch.Tensor:
        """``(T,)`` float64 ``‖∂L/∂h_t‖_F``: the probe's norms, or computed here on a sub-batch."""
        return self.hidden_norms if self.hidden_norms is not None else frobenius_per_step(self.hidden_grad)

    def cell_profile(self) -> torch.Tensor | None:
        """``(T,)`` float64 ``‖∂L/∂c_t‖_F`` (LSTM) or None."""
        if self.cell_grad is None:
            return None
        return self.cell_norms if self.cell_norms is not None else frobenius_per_step(self.cell_grad)


@dataclass
class _ProbedCall:
    name: str
    spec: FusedSpec
    inputs: torch.Tensor  # time-major, detached
    state: State  # detached start state
    record: ProbedLayer | AdjointRecord


class GradientFlowProbe:
    """Exact ``‖∂L/∂h_t‖`` at every step of every recurrent layer of a model, for one step's backward.

    Usage (any model holding ``nn.RNN``/``nn.LSTM``/``nn.GRU`` modules)::

        probe = GradientFlowProbe()
        with probe.attach(model):            # patches the recurrent modules' forward
            loss = criterion(model(x), y)
        loss.backward()
        flows = probe.gradient_flow()        # {layer name: LayerGradientFlow}

    While attached, each recurrent module runs as single-layer fused calls
    (:func:`rnnflow.probes.recurrent_modules.run_layer_by_layer`) through :func:`probed_call`. With
    truncated BPTT (several forward/backward pairs per step), call :meth:`collect` after each
    backward; the chunks of one layer are then concatenated along time by :meth:`gradient_flow`.
    Calls made with autograd off (``torch.no_grad``) run the module as it is.
    """

    def __init__(self, route: str = "auto") -> None:
        if route not in PROBE_ROUTES:
            raise ValueError(f"route={route!r}: expected one of {', '.join(PROBE_ROUTES)}")
        self.route = route
        self.calls: list[_ProbedCall] = []
        self.collected: dict[str, list[LayerGradientFlow]] = {}
        self.consumers: list[Callable[[LayerBackward], None]] = []

    def add_consumer(self, consumer: Callable[[LayerBackward], None]) -> None:
        """Call ``consumer(layer_backward)`` for every probed call at :meth:`collect`."""
        self.consumers.append(consumer)

    @contextmanager
    def attach(
        self, model: nn.Module, modules: dict[str, nn.Module] | None = None, short_names: bool = False
    ) -> Iterator[None]:
        """Probe ``modules`` (default: every recurrent module of ``model``) while the block runs.

        Layers are named as :mod:`rnnflow.probes.recurrent_modules` says (``"rnn/layer0"``); with
        ``short_names``, by their tag names (``"layer0"`` where the model has a single stack).
        """
        modules = find_recurrent_modules(model) if modules is None else modules
        keys = layer_keys(modules)
        if short_names:
            rename = tag_names(keys)
            keys = {m: [replace(k, name=rename[k.name]) for k in ks] for m, ks in keys.items()}
        patched = []
        try:
            for name, module in modules.items():
                if "forward" in vars(module):
                    raise RuntimeError(f"rnnflow: {name}.forward is already replaced (probe attached twice?)")
                module.forward = partial(self._forward, module, keys[name])
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward

    def _forward(self, module: nn.Module, keys: list[LayerKey], inputs: Any, hx: Any = None) -> Any:
        if not torch.is_grad_enabled():
            return type(module).forward(module, inputs, hx)
        return run_layer_by_layer(module, inputs, hx, self._call, keys)

    def _call(
        self, key: LayerKey, spec: FusedSpec, inputs: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, State]:
        start = initial_state(spec, inputs) if state is None else state
        hidden, final, record = probed_call(spec, inputs, start, self.route)
        detached = tuple(s.detach() for s in start) if isinstance(start, tuple) else start.detach()
        self.calls.append(_ProbedCall(key.name, spec, inputs.detach(), detached, record))
        return hidden, final

    def collect(self, grad_scale: float = 1.0) -> None:
        """Turn the calls since the last backward into profiles (and consumers' records); frees them."""
        for call in self.calls:
            dh, dc = total_hidden_gradients(call.record, grad_scale)
            flow = LayerGradientFlow(frobenius_per_step(dh), None if dc is None else frobenius_per_step(dc))
            if self.consumers:
                layer = self._layer_backward(call, dh, dc, flow)
                for consumer in self.consumers:
                    consumer(layer)
            self.collected.setdefault(call.name, []).append(flow)
        self.calls.clear()

    @staticmethod
    def _layer_backward(
        call: _ProbedCall, dh: torch.Tensor, dc: torch.Tensor | None, flow: LayerGradientFlow
    ) -> LayerBackward:
        spec = call.spec
        u = call.record.raw_output if isinstance(call.record, ProbedLayer) else call.record.output
        u = u.detach()  # both routes keep u time-major
        h0, c0 = call.state if isinstance(call.state, tuple) else (call.state, None)
        c0 = None if c0 is None else c0[0]
        return LayerBackward(call.name, spec, call.inputs, u, h0[0], c0, dh, dc, flow.hidden, flow.cell)

    def gradient_flow(self, grad_scale: float = 1.0) -> dict[str, LayerGradientFlow]:
        """One profile per layer over the whole sequence (chunks concatenated in call order)."""
        self.collect(grad_scale)
        flows = {}
        for name, parts in self.collected.items():
            cells = [p.cell for p in parts]
            cell = None if any(c is None for c in cells) else torch.cat(cells)
            flows[name] = LayerGradientFlow(torch.cat([p.hidden for p in parts]), cell)
        self.collected.clear()
        return flows


@dataclass
class GradientFlow:
    """What :func:`gradient_flow` hands back, filled when its block ends.

    Attributes:
        profiles: ``{layer name: (T,) ‖∂L/∂h_t‖_F}`` (the names of :mod:`rnnflow.probes.recurrent_modules`:
            ``"rnn/layer0"``, ``"encoder.lstm/layer1_reverse"``, ...).
        cell_profiles: ``{layer name: (T,) ‖∂L/∂c_t‖_F}`` for LSTM layers.
    """

    profiles: dict[str, torch.Tensor] = field(default_factory=dict)
    cell_profiles: dict[str, torch.Tensor] = field(default_factory=dict)


@contextmanager
def gradient_flow(
    model: nn.Module, modules: dict[str, nn.Module] | None = None, route: str = "auto"
) -> Iterator[GradientFlow]:
    """Exact per-step gradient flow of one forward and backward in plain PyTorch::

        with rnnflow.gradient_flow(model) as flow:
            loss = criterion(model(x), y)
            loss.backward()
        flow.profiles["rnn/layer0"]        # (T,) ‖∂L/∂h_t‖ for every t

    ``modules``: ``{name: module}`` to probe instead of every recurrent module of ``model``.
    The parameters' gradients are the fused computation's (see :func:`probed_call`).
    """
    probe = GradientFlowProbe(route)
    result = GradientFlow()
    with probe.attach(model, modules):
        yield result
    for name, flow in probe.gradient_flow().items():
        result.profiles[name] = flow.hidden
        if flow.cell is not None:
            result.cell_profiles[name] = flow.cell
