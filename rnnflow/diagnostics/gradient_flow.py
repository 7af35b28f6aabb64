"""Exact total gradient ∂L/∂h_t at every step of every layer, from one fused call per layer.

Notation for one layer (batch B, steps T, hidden H, gates G: 1 rnn, 4 lstm ``i f g o``,
3 gru ``r z n``): input ``x_t`` ``(B, I)``, hidden state ``h_t`` ``(B, H)``, gate
pre-activations ``a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` ``(B, G·H)`` and
``δ_t = ∂L/∂a_t`` (total: every path through later steps and higher layers).

The total gradient of the loss with respect to a hidden state is

    ∂L/∂h_{t-1} = d_{t-1} + J_tᵀ ∂L/∂h_t ,

where ``d_{t-1}`` is the *direct* gradient (from the head and the layer above, what
``retain_grad()`` on the fused output gives) and ``J_tᵀ`` the step's transposed Jacobian.
A fused kernel hides ``J_tᵀ ∂L/∂h_t``. We recover it exactly with a zero extra input
``e_t`` ``(B, K)`` whose input-weight block is a constant ``A`` ``(G·H, K)``
(:func:`rnnflow.models.fused.run_fused`), so that after backward ``∂L/∂e_t = Aᵀ δ_t``:

* rnn, lstm: ``A = W_hh`` (K = H) gives ``W_hhᵀ δ_t``, the whole recurrent term, so
  ``∂L/∂h_{t-1} = d_{t-1} + ∂L/∂e_t``.
* gru: ``h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}``, ``n_t = tanh(W_in x_t + b_in +
  r_t ⊙ (W_hn h_{t-1} + b_hn))``, hence
  ``∂L/∂h_{t-1} = d_{t-1} + W_hrᵀ δ^r_t + W_hzᵀ δ^z_t + W_hnᵀ (δ^n_t ⊙ r_t) + z_t ⊙ ∂L/∂h_t``.
  ``A = [[W_hr, 0], [W_hz, 0], [0, I]]`` (K = 2H) gives ``(W_hrᵀ δ^r_t + W_hzᵀ δ^z_t, δ^n_t)``;
  ``r_t, z_t`` are recomputed in one GEMM over all steps, and the ``z ⊙`` term is a
  reverse linear scan.

For the LSTM cell state (the "constant error carousel"), with ``c_t = f_t ⊙ c_{t-1} +
i_t ⊙ g_t`` and ``h_t = o_t ⊙ tanh(c_t)``:

    ∂L/∂c_t = ∂L/∂h_t ⊙ o_t ⊙ (1 - tanh² c_t) + f_{t+1} ⊙ ∂L/∂c_{t+1},

a reverse linear scan; ``f, o`` are recomputed in one GEMM and ``tanh c_t = h_t / o_t``.

The parameter gradients are those of the plain fused call (``A`` is a constant and ``e = 0``),
up to float rounding in the input GEMM.

The reported profile is the Frobenius norm over batch and units,
``n_t = ‖∂L/∂h_t‖_F = (Σ_b Σ_j (∂L/∂h_{t,b,j})²)^½``, shape ``(T,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnnflow.diagnostics.adjoint import AdjointRecord, adjoint_call, supports_adjoint
from rnnflow.models.fused import FusedSpec, State, fused_spec, initial_state, run_fused


@dataclass
class ProbedLayer:
    """What one probed fused call keeps for the post-backward computation."""

    spec: FusedSpec
    inputs: torch.Tensor  # x, as fed to the layer
    initial_hidden: torch.Tensor  # u_{-1}, (1, B, H): the state the call started from
    raw_output: torch.Tensor  # u (retains its grad: the direct gradient)
    extra_input: torch.Tensor  # e (zeros; its grad is Aᵀ δ)


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

    CPU, torch 2.13, 2 threads, T = 1000, H = 128, B = 64 (probed step / plain step): RNN
    adjoint 0.8-1.0x vs extra input 1.4x; LSTM adjoint 1.6-1.7x vs extra input 1.5x (the
    fused oneDNN backward is hard to beat from Python); GRU extra input 1.6-1.7x (no adjoint).
    On a GPU the extra input is one parallel GEMM beside cuDNN, while the adjoint's per-step
    loop would be launch-bound: ``auto`` = adjoint for the RNN on the CPU, extra input otherwise.
    """
    if route == "extra_input" or not supports_adjoint(spec) or torch.is_autocast_enabled(device.type):
        # The hand-written backward works in the weights' dtype; mixed precision keeps the fused one.
        return "extra_input"
    if route == "adjoint" or (device.type == "cpu" and spec.cell == "rnn"):
        return "adjoint"
    return "extra_input"


def probed_layer_call(
    layer: nn.Module, inputs: torch.Tensor, state: State | None = None, route: str = "extra_input"
) -> tuple[torch.Tensor, State, ProbedLayer | AdjointRecord]:
    """Run ``layer`` like ``layer(inputs, state)``, keeping what the probe needs: ``(h, final, record)``.

    ``route``: ``extra_input`` (fused forward and backward, zero extra input; any cell),
    ``adjoint`` (fused forward, hand-written backward; rnn and lstm), or ``auto``.
    """
    spec = fused_spec(layer)
    start = initial_state(spec, inputs) if state is None else state
    if choose_route(spec, inputs.device, route) == "adjoint":
        raw, final, record = adjoint_call(spec, inputs, start)
    else:
        block = _extra_block(spec)
        extra = inputs.new_zeros(*inputs.shape[:-1], block.size(1), requires_grad=True)
        raw, final = run_fused(spec, inputs, extra, block, state=start, raw_output=True)
        if raw.requires_grad:
            raw.retain_grad()
        start_hidden = start[0] if isinstance(start, tuple) else start
        record = ProbedLayer(spec, inputs.detach(), start_hidden.detach(), raw, extra)
    hidden = raw if spec.out_scale == 1.0 and spec.out_shift == 0.0 else raw * spec.out_scale + spec.out_shift
    return hidden, final, record


def _time_major(tensor: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return tensor.transpose(0, 1) if batch_first else tensor


def _gate_preactivations(
    spec: FusedSpec, inputs: torch.Tensor, prev: torch.Tensor, gates: list[int]
) -> torch.Tensor:
    """``W_ih x_t + b_ih + W_hh u_{t-1} + b_hh`` of the listed gate blocks, all t in one GEMM.

    ``inputs`` ``(T, B, I)``, ``prev`` ``(T, B, H)`` (``u_{t-1}``) → ``(T, B, len(gates)·H)``.
    """
    hidden, dtype = spec.hidden_size, inputs.dtype
    rows = torch.cat([torch.arange(g * hidden, (g + 1) * hidden) for g in gates]).to(inputs.device)
    w_ih, w_hh = (w.detach().to(dtype)[rows] for w in spec.weights[:2])
    weight = torch.cat([w_ih, w_hh], dim=1)
    stacked = torch.cat([inputs, prev], dim=-1).flatten(0, 1)
    if spec.has_bias:
        bias = (spec.weights[2].detach() + spec.weights[3].detach()).to(dtype)[rows]
        gates_flat = torch.addmm(bias, stacked, weight.T)
    else:
        gates_flat = stacked @ weight.T
    return gates_flat.view(*inputs.shape[:2], -1)


def _reverse_linear_scan(drive: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``y_t = drive_t + decay_{t+1} ⊙ y_{t+1}``, ``y_{T-1} = drive_{T-1}``; time-major ``(T, …)``.

    A loop over ``unbind`` views: T small fused multiply-adds (indexing ``x[t]`` in a loop
    that autograd records is O(T²), DESIGN fact 3; no autograd here, but unbind is as cheap).
    """
    drives, decays = drive.unbind(0), decay.unbind(0)
    out = [drives[-1]]
    for t in range(len(drives) - 2, -1, -1):
        out.append(torch.addcmul(drives[t], decays[t + 1], out[-1]))
    return torch.stack(out[::-1])


def _lstm_cell_grad(
    spec: FusedSpec, x: torch.Tensor, u: torch.Tensor, prev: torch.Tensor, dh: torch.Tensor
) -> torch.Tensor:
    """``∂L/∂c_t`` for all t (time-major ``(T, B, H)``) from the states and ``∂L/∂h_t``.

    ``c_t`` itself is never needed: ``h_t = o_t ⊙ tanh(c_t)`` gives ``tanh(c_t) = h_t / o_t``
    (``o_t > 0``; where ``o_t`` underflows to 0, ``h_t = 0`` and the term vanishes), so
    ``o_t ⊙ (1 - tanh² c_t) = o_t - h_t ⊙ (h_t / o_t)``. Only the ``f`` and ``o`` gates are
    recomputed (one GEMM), then one reverse linear scan.
    """
    f, o = _gate_preactivations(spec, x, prev, [1, 3]).sigmoid_().chunk(2, dim=-1)
    tiny = torch.finfo(o.dtype).tiny
    through_tanh = o - u * (u / o.clamp_min(tiny))
    return _reverse_linear_scan(dh * through_tanh, f)


def total_hidden_gradients(
    record: ProbedLayer | AdjointRecord, grad_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """After backward: ``(∂L/∂h, ∂L/∂c or None)``, time-major ``(T, B, H)``, float32 or wider.

    ``grad_scale`` divides out a loss scale (mixed precision's GradScaler).
    """
    spec = record.spec
    if isinstance(record, AdjointRecord):
        du, dc = record.gradients()
        return du / (spec.out_scale * grad_scale), (None if dc is None else dc / grad_scale)
    hidden = spec.hidden_size
    # At least float32 (half-precision runs), float64 stays float64 (tests).
    dtype = torch.promote_types(record.raw_output.dtype, torch.float32)
    with torch.no_grad():
        u = _time_major(record.raw_output.detach(), spec.batch_first).to(dtype)
        x = _time_major(record.inputs, spec.batch_first).to(dtype)
        direct = record.raw_output.grad
        direct = torch.zeros_like(u) if direct is None else _time_major(direct, spec.batch_first).to(dtype)
        extra = record.extra_input.grad
        if extra is None:  # no loss reached this call (e.g. a TBPTT chunk without targets)
            extra = u.new_zeros(*u.shape[:-1], record.extra_input.size(-1))
        else:
            extra = _time_major(extra, spec.batch_first).to(dtype)
        # Gradient with respect to u_{t-1} that arrives through step t: (T-1, B, ·) for t = 1..T-1.
        recurrent = extra[1:, :, :hidden]
        drive = direct.clone()
        prev = torch.cat([record.initial_hidden.to(dtype), u[:-1]])  # u_{t-1}, (T, B, H)
        if spec.cell == "gru":
            r, z = _gate_preactivations(spec, x, prev, [0, 1]).sigmoid_().chunk(2, dim=-1)
            w_hn = spec.weights[1].detach().to(dtype)[2 * hidden :]
            drive[:-1] += recurrent + (extra[1:, :, hidden:] * r[1:]) @ w_hn
            du = _reverse_linear_scan(drive, z)
        else:
            drive[:-1] += recurrent
            du = drive
        dc = _lstm_cell_grad(spec, x, u, prev, du) if spec.cell == "lstm" else None
        # h = s·u + c  ⇒  ∂L/∂h = ∂L/∂u / s.
        dh = du / (spec.out_scale * grad_scale)
        if dc is not None:
            dc = dc / grad_scale
    return dh, dc


def frobenius_per_step(gradients: torch.Tensor) -> torch.Tensor:
    """``(T, B, H)`` → ``(T,)``: ``‖·‖_F`` over batch and units at each step."""
    return gradients.square().sum(dim=(1, 2)).sqrt()


@dataclass
class GradientFlowProbe:
    """Collects probed layer calls; reads the per-step profiles after each backward.

    Usage::

        probe = GradientFlowProbe()
        loss = task.loss(model(x, layer_call=probe.layer_call), y)
        loss.backward()
        flows = probe.gradient_flow()     # one LayerGradientFlow per layer

    With truncated BPTT, call :meth:`collect` after each chunk's backward; the profiles of
    the chunks of one layer are then concatenated along time by :meth:`gradient_flow`.
    """

    route: str = "auto"
    records: list[tuple[int, ProbedLayer | AdjointRecord]] = field(default_factory=list)
    collected: dict[int, list[LayerGradientFlow]] = field(default_factory=dict)

    def layer_call(
        self, index: int, layer: nn.Module, inputs: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        hidden, final, record = probed_layer_call(layer, inputs, state, self.route)
        self.records.append((index, record))
        return hidden, final

    def collect(self, grad_scale: float = 1.0) -> None:
        """Turn the calls since the last backward into profiles (frees their tensors)."""
        for index, record in self.records:
            dh, dc = total_hidden_gradients(record, grad_scale)
            cell = None if dc is None else frobenius_per_step(dc)
            self.collected.setdefault(index, []).append(LayerGradientFlow(frobenius_per_step(dh), cell))
        self.records.clear()

    def gradient_flow(self, grad_scale: float = 1.0) -> list[LayerGradientFlow]:
        """One profile per layer over the whole sequence (chunks concatenated in call order)."""
        self.collect(grad_scale)
        flows = []
        for index in sorted(self.collected):
            parts = self.collected[index]
            cells = [p.cell for p in parts]
            cell = None if any(c is None for c in cells) else torch.cat(cells)
            flows.append(LayerGradientFlow(torch.cat([p.hidden for p in parts]), cell))
        self.collected.clear()
        return flows
