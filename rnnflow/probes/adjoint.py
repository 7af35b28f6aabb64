"""The adjoint route: a fused forward plus a hand-written backward that yields ∂L/∂h_t on the way.

For the CPU, where a probe's extra input GEMMs cost as much as the recurrence itself, this
route replaces the fused kernel's backward with the adjoint recurrence, which computes the
total gradient of every hidden state anyway (time-major, batch B, hidden H, gates G):

RNN, ``u_t = φ(a_t)``, ``a_t = W_ih x_t + b_ih + W_hh u_{t-1} + b_hh``:

    ∂L/∂u_t = d_t + W_hhᵀ δ_{t+1},   δ_t = ∂L/∂u_t ⊙ φ'(a_t)      (φ' = 1 - u² for tanh, [u > 0] for relu)

LSTM, gates ``i f g o``, ``c_t = f_t c_{t-1} + i_t g_t``, ``h_t = o_t tanh c_t``:

    ∂L/∂h_t = d_t + W_hhᵀ δ_{t+1}
    ∂L/∂c_t = ∂L/∂h_t ⊙ o_t (1 - tanh² c_t) + f_{t+1} ⊙ ∂L/∂c_{t+1}
    δ_t = [∂L/∂c_t ⊙ g_t i_t(1-i_t),  ∂L/∂c_t ⊙ c_{t-1} f_t(1-f_t),  ∂L/∂c_t ⊙ i_t(1-g_t²),
           ∂L/∂h_t ⊙ tanh(c_t) o_t(1-o_t)]

where ``d_t`` is the gradient arriving from above (head, next layer). Everything that does
not depend on the gradient (gates from one GEMM over all steps, the c scan, the factors
multiplying ∂L/∂c and ∂L/∂h) is computed batched; the loop over t does only a few (B, G·H)
operations and one ``(B, G·H) @ (G·H, H)`` product per step. The parameter gradients then
come from batched GEMMs: ``∂L/∂W_ih = Σ_t δ_tᵀ x_t``, ``∂L/∂W_hh = Σ_t δ_tᵀ u_{t-1}``,
``∂L/∂b = Σ_t δ_t``, ``∂L/∂x_t = δ_t W_ih``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rnnflow.models.fused import KERNELS, FusedSpec, State

ADJOINT_KERNELS = ("rnn_tanh", "rnn_relu", "lstm")


@dataclass
class AdjointRecord:
    """Filled by the backward pass: total ∂L/∂u_t (and ∂L/∂c_t), time-major ``(T, B, H)``."""

    spec: FusedSpec
    hidden_grads: torch.Tensor | None = None
    cell_grads: torch.Tensor | None = None
    output: torch.Tensor | None = None  # u (detached), for the shape when no gradient reached it

    def gradients(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(∂L/∂u, ∂L/∂c or None)`` time-major; zeros where backward never reached the layer."""
        if self.hidden_grads is None:
            zeros = _time_major(self.output, self.spec.batch_first).new_zeros(())
            zeros = zeros.expand_as(_time_major(self.output, self.spec.batch_first))
            return zeros, (zeros if self.spec.kernel == "lstm" else None)
        return self.hidden_grads, self.cell_grads


def _time_major(tensor: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return tensor.transpose(0, 1) if batch_first else tensor


class _AdjointRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, kernel: str, batch_first: bool, record: AdjointRecord, *tensors: torch.Tensor
    ) -> Any:
        x, h0, c0, w_ih, w_hh, b_ih, b_hh = tensors
        hx = (h0, c0) if kernel == "lstm" else h0
        result = KERNELS[kernel](x, hx, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, True, False, batch_first)
        ctx.kernel, ctx.batch_first, ctx.record = kernel, batch_first, record
        ctx.save_for_backward(x, result[0], h0, c0, w_ih, w_hh, b_ih, b_hh)
        return tuple(result) if kernel == "lstm" else (result[0], result[1], torch.zeros_like(h0))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor, grad_hn: torch.Tensor, grad_cn: torch.Tensor) -> Any:
        x, out, h0, c0, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors
        # Time-major and contiguous, so that (T·B, ·) views feed the batched GEMMs.
        xs = _time_major(x, ctx.batch_first).contiguous()
        us = _time_major(out, ctx.batch_first).contiguous()
        direct = torch.zeros_like(us) if grad_out is None else _time_major(grad_out, ctx.batch_first)
        recurrent = torch.zeros_like(h0[0]) if grad_hn is None else grad_hn[0].clone()
        if ctx.kernel == "lstm":
            carry = torch.zeros_like(h0[0]) if grad_cn is None else grad_cn[0].clone()
            delta, du, dc, carry = _lstm_adjoint(
                xs, us, h0[0], c0[0], direct, recurrent, carry, w_ih, w_hh, b_ih + b_hh
            )
            ctx.record.cell_grads = dc
            grad_c0 = carry.unsqueeze(0)
        else:
            delta, du = _rnn_adjoint(us, direct, recurrent, w_hh, ctx.kernel)
            grad_c0 = None
        ctx.record.hidden_grads = du
        flat_delta = delta.flatten(0, 1)  # (T·B, G·H)
        grad_w_ih = flat_delta.T @ xs.flatten(0, 1)
        # Σ_t δ_tᵀ u_{t-1}, with u_{-1} = h0.
        grad_w_hh = torch.addmm(delta[0].T @ h0[0], delta[1:].flatten(0, 1).T, us[:-1].flatten(0, 1))
        grad_bias = flat_delta.sum(dim=0)
        grad_x = None
        if ctx.needs_input_grad[3]:
            grad_x = delta @ w_ih
            grad_x = grad_x.transpose(0, 1) if ctx.batch_first else grad_x
        grad_h0 = (delta[0] @ w_hh).unsqueeze(0)
        return None, None, None, grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_bias


def _rnn_adjoint(
    us: torch.Tensor, direct: torch.Tensor, recurrent: torch.Tensor, w_hh: torch.Tensor, kernel: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(δ, ∂L/∂u)``, both ``(T, B, H)``; ``recurrent`` enters as ∂L/∂u_{T-1} from the final state."""
    slope = 1 - us.square() if kernel == "rnn_tanh" else (us > 0).to(us.dtype)
    du, delta = torch.empty_like(us), torch.empty_like(us)
    for t in range(us.size(0) - 1, -1, -1):
        torch.add(direct[t], recurrent, out=du[t])
        torch.mul(du[t], slope[t], out=delta[t])
        torch.mm(delta[t], w_hh, out=recurrent)
    return delta, du


def _lstm_adjoint(
    xs: torch.Tensor,
    us: torch.Tensor,
    h_initial: torch.Tensor,
    c_initial: torch.Tensor,
    direct: torch.Tensor,
    recurrent: torch.Tensor,
    carry: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(δ (T, B, 4H), ∂L/∂h (T, B, H), ∂L/∂c (T, B, H), ∂L/∂c_{-1})``.

    Written with preallocated buffers and ``out=`` arguments: the loop runs T times and
    every avoided allocation of a ``(B, ·)`` tensor is a measurable share of it.
    """
    steps, batch, hidden = us.shape
    gates = torch.addmm(bias, xs.flatten(0, 1), w_ih.T).view(steps, batch, 4 * hidden)
    gates[1:].view(-1, 4 * hidden).addmm_(us[:-1].flatten(0, 1), w_hh.T)
    gates[0].addmm_(h_initial, w_hh.T)
    i, f, g, o = gates.chunk(4, dim=-1)
    i.sigmoid_(), f.sigmoid_(), g.tanh_(), o.sigmoid_()
    input_times_g = i * g
    cells = torch.empty(steps + 1, batch, hidden, dtype=us.dtype, device=us.device)
    cells[0] = c_initial
    for t in range(steps):
        torch.addcmul(input_times_g[t], f[t], cells[t], out=cells[t + 1])
    tanh_c = cells[1:].tanh()
    through_tanh = torch.addcmul(o, us, tanh_c, value=-1)  # o (1 - tanh² c) = o - h tanh c
    # δ_t = factors_t ⊙ [dc, dc, dc, dh]  (gate order i f g o)
    factors = torch.empty_like(gates).view(steps, batch, 4, hidden)
    torch.addcmul(i, i, i, value=-1, out=factors[:, :, 0]).mul_(g)  # g i (1 - i)
    torch.addcmul(f, f, f, value=-1, out=factors[:, :, 1]).mul_(cells[:-1])  # c_{t-1} f (1 - f)
    torch.addcmul(i, input_times_g, g, value=-1, out=factors[:, :, 2])  # i (1 - g²)
    torch.addcmul(o, o, o, value=-1, out=factors[:, :, 3]).mul_(tanh_c)  # tanh(c) o (1 - o)
    du, dc = torch.empty_like(us), torch.empty_like(us)
    delta = torch.empty_like(factors)
    for t in range(steps - 1, -1, -1):
        torch.add(direct[t], recurrent, out=du[t])
        torch.addcmul(carry, du[t], through_tanh[t], out=dc[t])
        torch.mul(factors[t, :, :3], dc[t].unsqueeze(1), out=delta[t, :, :3])
        torch.mul(factors[t, :, 3], du[t], out=delta[t, :, 3])
        torch.mm(delta[t].view(batch, 4 * hidden), w_hh, out=recurrent)
        torch.mul(dc[t], f[t], out=carry)
    return delta.view(steps, batch, 4 * hidden), du, dc, carry


def supports_adjoint(spec: FusedSpec) -> bool:
    return spec.kernel in ADJOINT_KERNELS and spec.has_bias


def adjoint_call(
    spec: FusedSpec, inputs: torch.Tensor, state: State
) -> tuple[torch.Tensor, State, AdjointRecord]:
    """Run the layer as the fused forward with the adjoint backward: ``(u, final state, record)``."""
    record = AdjointRecord(spec)
    h0, c0 = state if isinstance(state, tuple) else (state, torch.zeros_like(state))
    out, hn, cn = _AdjointRecurrence.apply(
        spec.kernel, spec.batch_first, record, inputs, h0, c0, *spec.weights
    )
    record.output = out.detach()
    return out, ((hn, cn) if spec.kernel == "lstm" else hn), record
