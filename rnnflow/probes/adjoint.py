"""The adjoint route: a fused forward plus a hand-written backward that yields ∂L/∂h_t on the way.

On the CPU a probe that widens the fused call's input pays three extra GEMMs of size
``T·B × G·H × H`` (forward, input gradient, weight gradient), as much as the recurrence itself.
This route instead keeps the fused forward and replaces the fused backward with the adjoint
recurrence, which computes the total gradient of every hidden state anyway (time-major, batch B,
hidden H, gates G; ``d_t`` the gradient arriving from above: head, next layer; ``u_{-1}`` the
initial state):

RNN, ``u_t = φ(a_t)``, ``a_t = W_ih x_t + b_ih + W_hh u_{t-1} + b_hh``:

    ∂L/∂u_t = d_t + W_hhᵀ δ_{t+1},   δ_t = ∂L/∂u_t ⊙ φ'(a_t)      (φ' = 1 - u² for tanh, [u > 0] for relu)

LSTM, gates ``i f g o``, ``c_t = f_t c_{t-1} + i_t g_t``, ``h_t = o_t tanh c_t``:

    ∂L/∂h_t = d_t + W_hhᵀ δ_{t+1}
    ∂L/∂c_t = ∂L/∂h_t ⊙ o_t (1 - tanh² c_t) + f_{t+1} ⊙ ∂L/∂c_{t+1}
    δ_t = [∂L/∂c_t ⊙ g_t i_t(1-i_t),  ∂L/∂c_t ⊙ c_{t-1} f_t(1-f_t),  ∂L/∂c_t ⊙ i_t(1-g_t²),
           ∂L/∂h_t ⊙ tanh(c_t) o_t(1-o_t)]

GRU, gates ``r z n``, ``n_t = tanh(a^n_t + r_t ⊙ m_t)`` with ``m_t = W_hn u_{t-1} + b_hn``,
``u_t = (1 - z_t) ⊙ n_t + z_t ⊙ u_{t-1}``; the input side and the hidden side of the gate
pre-activations get different gradients in the ``n`` block:

    ν_t = ∂L/∂u_t ⊙ (1 - z_t)(1 - n_t²)                            (∂L/∂a^n_t, input side)
    δ_t = [ν_t ⊙ m_t r_t(1-r_t),  ∂L/∂u_t ⊙ (u_{t-1} - n_t) z_t(1-z_t),  ν_t ⊙ r_t]   (hidden side)
    ∂L/∂u_{t-1} = d_{t-1} + W_hhᵀ δ_t + z_t ⊙ ∂L/∂u_t

Everything that does not depend on the gradient (the gates, from batched GEMMs over all steps;
the LSTM's c scan; the factors that multiply ∂L/∂u and ∂L/∂c into δ) is computed before the
loop over t, which then does only a few ``(B, G·H)`` operations and one ``(B, G·H) @ (G·H, H)``
product per step. The parameter gradients come from batched GEMMs afterwards:
``∂L/∂W_ih = Σ_t δ^inᵀ_t x_t``, ``∂L/∂W_hh = Σ_t δ_tᵀ u_{t-1}``, ``∂L/∂b_ih = Σ_t δ^in_t``,
``∂L/∂b_hh = Σ_t δ_t``, ``∂L/∂x_t = δ^in_t W_ih`` (``δ^in = δ`` except the GRU's ``n`` block,
``ν``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnnflow.models.fused import KERNELS, FusedSpec, State

ADJOINT_KERNELS = ("rnn_tanh", "rnn_relu", "lstm", "gru")

_BLOCK_ELEMENTS = 1 << 17
"""Size of a ``(steps, B, H)`` block of the precomputations (512 KiB in float32): a block's gates,
factors and temporaries stay in the cache while they are computed, instead of every elementwise
pass streaming ``T·B·G·H`` values through memory."""


@dataclass
class AdjointRecord:
    """Filled by the backward pass: total ∂L/∂u_t (and ∂L/∂c_t), time-major ``(T, B, H)``."""

    spec: FusedSpec
    hidden_grads: torch.Tensor | None = None
    cell_grads: torch.Tensor | None = None
    output: torch.Tensor | None = None  # u (detached, time-major), for the shape when no gradient arrived

    def gradients(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(∂L/∂u, ∂L/∂c or None)`` time-major; zeros where backward never reached the layer."""
        if self.hidden_grads is None:
            zeros = self.output.new_zeros(()).expand_as(self.output)
            return zeros, (zeros if self.spec.kernel == "lstm" else None)
        return self.hidden_grads, self.cell_grads


@dataclass
class _Adjoint:
    """What a cell's adjoint hands back: the gradients of the layer call's inputs and the probe's data."""

    hidden: torch.Tensor  # ∂L/∂u, (T, B, H)
    cell: torch.Tensor | None  # ∂L/∂c, (T, B, H), LSTM
    grad_h0: torch.Tensor  # (B, H)
    grad_c0: torch.Tensor | None  # (B, H), LSTM
    grad_w_ih: torch.Tensor
    grad_w_hh: torch.Tensor
    grad_b_ih: torch.Tensor
    grad_b_hh: torch.Tensor
    grad_x: torch.Tensor | None  # (T, B, I)


class _AdjointRecurrence(torch.autograd.Function):
    """The layer's forward (fused kernel, or the LSTM loop) with the adjoint backward of the docstring."""

    @staticmethod
    def forward(ctx: Any, kernel: str, record: AdjointRecord, *tensors: torch.Tensor) -> Any:
        xs, h0, c0, w_ih, w_hh, b_ih, b_hh = tensors
        ctx.kernel, ctx.record = kernel, record
        if kernel == "lstm":
            ctx.lstm = _LSTMForward(xs, h0[0], c0[0], w_ih, w_hh, b_ih + b_hh)
            outputs = ctx.lstm.outputs
            final = (ctx.lstm.final_hidden(), ctx.lstm.final_cell())
        else:
            # train=False: one layer has no dropout, and the kernel keeps nothing for its own backward.
            outputs, hn = KERNELS[kernel](xs, h0, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, False)
            final = (hn, torch.zeros_like(h0))
        ctx.save_for_backward(xs, outputs, h0, w_ih, w_hh, b_ih, b_hh)
        return outputs, *final

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor, grad_hn: torch.Tensor, grad_cn: torch.Tensor) -> Any:
        xs, us, h0, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors
        xs = xs.contiguous()  # (T·B, I) views feed the batched GEMMs
        # ∂L/∂u starts as the direct gradient; the loop adds the recurrent terms in place.
        contiguous = torch.contiguous_format
        if ctx.kernel == "lstm":
            du = ctx.lstm.hidden_grad_buffer()
            du.copy_(grad_out) if grad_out is not None else du.zero_()
        else:
            du = torch.zeros_like(us) if grad_out is None else grad_out.clone(memory_format=contiguous)
        if grad_hn is not None:
            du[-1] += grad_hn[0]
        need_x = ctx.needs_input_grad[2]
        if ctx.kernel == "lstm":
            carry = None if grad_cn is None else grad_cn[0]
            result = ctx.lstm.backward(du, carry, need_x)
            del ctx.lstm
        elif ctx.kernel == "gru":
            result = _gru_adjoint(xs, us, h0[0], du, w_ih, w_hh, b_ih, b_hh, need_x)
        else:
            result = _rnn_adjoint(xs, us, h0[0], du, w_ih, w_hh, ctx.kernel, need_x)
        ctx.record.hidden_grads, ctx.record.cell_grads = result.hidden, result.cell
        grad_c0 = None if result.grad_c0 is None else result.grad_c0.unsqueeze(0)
        return (
            None,
            None,
            result.grad_x,
            result.grad_h0.unsqueeze(0),
            grad_c0,
            result.grad_w_ih,
            result.grad_w_hh,
            result.grad_b_ih,
            result.grad_b_hh,
        )


def _blocks(steps: int, width: int) -> list[tuple[int, int]]:
    """``[(start, stop), …]`` covering ``0 … steps`` in blocks of about ``_BLOCK_ELEMENTS / width`` steps."""
    size = max(1, min(steps, _BLOCK_ELEMENTS // width))
    return [(start, min(steps, start + size)) for start in range(0, steps, size)]


def _previous(us: torch.Tensor, h0: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
    """``u_{t-1}`` for ``start ≤ t < stop`` as time-major pieces (``u_{-1} = h0``), without a copy."""
    if start > 0:
        return [us[start - 1 : stop - 1]]
    return [h0.unsqueeze(0), us[: stop - 1]] if stop > 1 else [h0.unsqueeze(0)]


def _recurrent_gemm_(
    out: torch.Tensor, us: torch.Tensor, h0: torch.Tensor, weight: torch.Tensor, start: int, stop: int
) -> None:
    """``out_t += W u_{t-1}`` for ``start ≤ t < stop``; ``out`` ``(stop - start, B, R)``."""
    offset = 0
    for piece in _previous(us, h0, start, stop):
        rows = out[offset : offset + len(piece)]
        rows.view(-1, rows.size(-1)).addmm_(piece.flatten(0, 1), weight.T)
        offset += len(piece)


_ROWS_ELEMENTS = 1 << 20
"""Size of the reused ``[u_{t-1} | x_t | 1]`` row buffer of :func:`_parameter_grads` (4 MiB in
float32): materialising those rows for all T steps at once would add a ``(T, B, H + I + 1)`` copy,
as large as ∂L/∂u itself, to the probe step's peak memory."""


DeltaBlock = Callable[[int, int], torch.Tensor]  # (start, stop) -> δ of those steps, ((stop - start)·B, R)


def _parameter_grads(
    delta: torch.Tensor | DeltaBlock,
    xs: torch.Tensor,
    us: torch.Tensor,
    h0: torch.Tensor,
    with_hidden: bool = True,
    input_grad: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(∂L/∂W_hh, ∂L/∂W_ih, Σ δ)`` from ``δ`` ``(T·B, R)``: ``Σ_t [u_{t-1} | x_t | 1]ᵀ δ_t``.

    ``delta`` may be a function giving δ block by block (the RNN's, computed from ∂L/∂u rather than
    kept for all steps); ``input_grad = (out, W_ih)`` also writes ``∂L/∂x_t = δ_t W_ih`` into
    ``out`` ``(T, B, I)`` in the same pass.

    The rows ``[u_{t-1} | x_t | 1]`` (``[x_t | 1]`` without ``with_hidden``; ∂L/∂W_hh is then None)
    are built block by block of steps in one reused buffer and their products accumulated. The
    column of ones makes the bias gradient one more row of the weight gradients' product, which
    streams ``δ`` through memory once. ``vᵀ δ`` rather than ``δᵀ v``: with a narrow ``v`` (a first
    layer's few inputs) MKL runs the latter about 10x slower.
    """
    steps, batch, hidden = us.shape
    first = hidden if with_hidden else 0
    width = first + xs.size(-1) + 1
    block = max(1, min(steps, _ROWS_ELEMENTS // (batch * width)))
    rows = us.new_empty(block, batch, width)
    rows[..., -1] = 1
    product: torch.Tensor | None = None
    for start in range(0, steps, block):
        stop = min(steps, start + block)
        part = rows[: stop - start]
        if with_hidden:
            offset = 0
            for piece in _previous(us, h0, start, stop):
                part[offset : offset + len(piece), :, :hidden] = piece
                offset += len(piece)
        part[:, :, first:-1] = xs[start:stop]
        rows_delta = delta(start, stop) if callable(delta) else delta[start * batch : stop * batch]
        if product is None:
            product = us.new_zeros(width, rows_delta.size(-1))
        product.addmm_(part.view(-1, width).T, rows_delta)
        if input_grad is not None:
            out, w_ih = input_grad
            torch.mm(rows_delta, w_ih, out=out[start:stop].view(-1, w_ih.size(1)))
    grad_w_hh = product[:hidden].T.contiguous() if with_hidden else None
    return grad_w_hh, product[first:-1].T.contiguous(), product[-1].clone()


def _rnn_adjoint(
    xs: torch.Tensor, us: torch.Tensor, h0: torch.Tensor, du: torch.Tensor, w_ih: torch.Tensor,
    w_hh: torch.Tensor, kernel: str, need_x: bool,
) -> _Adjoint:  # fmt: skip
    """``du`` holds the direct gradient on entry and ∂L/∂u on return.

    ``δ_t = φ'(a_t) ⊙ ∂L/∂u_t`` is not kept for all steps (a ``(T, B, H)`` buffer as large as
    ``du``, the probe step's peak memory): the loop needs only ``δ_{t+1}`` (two rows, swapped), and
    the parameter and input gradients recompute δ block by block from ``du`` and ``u``, with the
    same operations and so the same values. Loops run over ``unbind`` views made once: a view made
    per step costs as much as an operation.
    """
    tanh = kernel == "rnn_tanh"
    mask = None if tanh else us > 0
    one = torch.ones_like(us[0])  # (B, H), broadcast over a block's steps

    def delta_of(grads: torch.Tensor, outputs: torch.Tensor, active: torch.Tensor | None, out: torch.Tensor):
        if tanh:  # (1 - u²) ⊙ ∂L/∂u, the fused kernel's order of operations
            return torch.addcmul(one, outputs, outputs, value=-1, out=out).mul_(grads)
        return torch.mul(grads, active, out=out)

    du_rows, u_rows = du.unbind(0), us.unbind(0)
    mask_rows = mask.unbind(0) if mask is not None else [None] * len(u_rows)
    current, spare = torch.empty_like(du_rows[0]), torch.empty_like(du_rows[0])
    last = len(du_rows) - 1
    delta_of(du_rows[last], u_rows[last], mask_rows[last], current)
    for t in range(last - 1, -1, -1):
        du_rows[t].addmm_(current, w_hh)
        current, spare = delta_of(du_rows[t], u_rows[t], mask_rows[t], spare), current
    grad_h0 = current @ w_hh  # δ_0

    def delta_block(start: int, stop: int) -> torch.Tensor:
        active = None if mask is None else mask[start:stop]
        block = delta_of(du[start:stop], us[start:stop], active, torch.empty_like(du[start:stop]))
        return block.flatten(0, 1)

    grad_x = xs.new_empty(xs.shape) if need_x else None
    input_grad = None if grad_x is None else (grad_x, w_ih)
    grad_w_hh, grad_w_ih, grad_b = _parameter_grads(delta_block, xs, us, h0, input_grad=input_grad)
    return _Adjoint(du, None, grad_h0, None, grad_w_ih, grad_w_hh, grad_b, grad_b, grad_x)


# PyTorch's LSTM gate order is i f g o; the loop keeps i f o g, so that one sigmoid covers three.
def _to_ifog(tensor: torch.Tensor) -> torch.Tensor:
    i, f, g, o = tensor.chunk(4)
    return torch.cat([i, f, o, g])


def _from_ifog(tensor: torch.Tensor) -> torch.Tensor:
    i, f, o, g = tensor.chunk(4)
    return torch.cat([i, f, g, o])


class _LSTMForward:
    """The LSTM forward as a loop over t that keeps what the adjoint needs, and that adjoint.

    A fused forward keeps nothing the adjoint can read, so the adjoint would recompute every
    gate (one more ``T·B × 4H × H`` GEMM) and the c scan. This loop costs about what the fused
    forward and that recomputation save: per step one ``(B, H) @ (H, 4H)`` product and seven
    ``(B, ·)`` operations (gate activations, ``c_t = f_t c_{t-1} + i_t g_t``, ``tanh c_t``,
    ``h_t = o_t tanh c_t``), into buffers allocated once (gates ``(T, B, 4H)`` in the order
    ``i f o g``, ``c`` ``(T+1, B, H)``, ``tanh c`` ``(T, B, H)``, ``h`` ``(T, B, H)``). The
    outputs equal the fused kernel's up to float rounding.
    """

    def __init__(
        self, xs: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
        bias: torch.Tensor,
    ) -> None:  # fmt: skip
        steps, batch = xs.shape[:2]
        hidden = h0.size(-1)
        self.xs, self.h0, self.w_ih, self.w_hh = xs, h0, w_ih, w_hh
        w_hh_t = _to_ifog(w_hh).T
        gates = torch.addmm(_to_ifog(bias), xs.flatten(0, 1), _to_ifog(w_ih).T)
        self.gates = gates = gates.view(steps, batch, 4 * hidden)
        self.cells = cells = h0.new_empty(steps + 1, batch, hidden)
        self.tanh_c = h0.new_empty(steps, batch, hidden)
        self.outputs = outputs = h0.new_empty(steps, batch, hidden)
        cells[0] = c0
        gate_rows, cell_rows = gates.unbind(0), cells.unbind(0)
        sigmoid_rows, g_rows = gates[..., : 3 * hidden].unbind(0), gates[..., 3 * hidden :].unbind(0)
        i_rows, f_rows, o_rows = (gates[..., k * hidden : (k + 1) * hidden].unbind(0) for k in range(3))
        tanh_rows, out_rows = self.tanh_c.unbind(0), outputs.unbind(0)
        previous = h0
        for t in range(steps):
            gate_rows[t].addmm_(previous, w_hh_t)
            sigmoid_rows[t].sigmoid_()
            g_rows[t].tanh_()
            torch.mul(i_rows[t], g_rows[t], out=cell_rows[t + 1])
            cell_rows[t + 1].addcmul_(f_rows[t], cell_rows[t])
            torch.tanh(cell_rows[t + 1], out=tanh_rows[t])
            previous = torch.mul(o_rows[t], tanh_rows[t], out=out_rows[t])

    def final_hidden(self) -> torch.Tensor:
        return self.outputs[-1:].clone()

    def final_cell(self) -> torch.Tensor:
        return self.cells[-1:].clone()

    def hidden_grad_buffer(self) -> torch.Tensor:
        """A ``(T, B, H)`` buffer for ∂L/∂h: ``tanh c``'s storage, free once :meth:`_factors` has run."""
        self._factors()
        return self.tanh_c

    def _factors(self) -> None:
        """In place, block by block of steps: gates → ``F_t`` with ``δ_t = F_t ⊙ [dc, dc, dc, dh]``
        (order i f o g); ``tanh c`` → the dc drive ``o (1 - tanh² c)``; ``f`` copied to ``forget``."""
        steps, batch, width = self.gates.shape
        hidden = width // 4
        self.forget = torch.empty_like(self.tanh_c)
        self.drive = torch.empty_like(self.tanh_c)
        view = self.gates.view(steps, batch, 4, hidden)
        for start, stop in _blocks(steps, batch * width):
            i, f, o, g = view[start:stop].unbind(2)
            tanh_c = self.tanh_c[start:stop]
            self.forget[start:stop] = f
            torch.addcmul(o, o, tanh_c.square(), value=-1, out=self.drive[start:stop])  # o (1 - tanh² c)
            torch.addcmul(f, f, f, value=-1, out=f).mul_(self.cells[start:stop])  # c_{t-1} f (1 - f)
            torch.addcmul(o, o, o, value=-1, out=o).mul_(tanh_c)  # tanh(c) o (1 - o)
            input_times_g = i * g
            torch.addcmul(i, input_times_g, g, value=-1, out=g)  # i (1 - g²)
            torch.addcmul(input_times_g, input_times_g, i, value=-1, out=i)  # g i (1 - i)

    def backward(self, du: torch.Tensor, carry: torch.Tensor | None, need_x: bool) -> _Adjoint:
        """``du`` (:meth:`hidden_grad_buffer`) holds the direct gradient on entry and ∂L/∂h on
        return; ``carry`` is ∂L/∂c_{T-1} from the final cell state. The loop over t turns ``F_t``
        into ``δ_t`` in place (five operations and one ``(B, 4H) @ (4H, H)`` product per step)."""
        steps, batch, width = self.gates.shape
        hidden = width // 4
        w_hh = _to_ifog(self.w_hh)
        dc = self.drive  # the drive's storage becomes ∂L/∂c, from the last step back
        du_rows, dc_rows, forget_rows = du.unbind(0), dc.unbind(0), self.forget.unbind(0)
        dc_wide = dc.unsqueeze(2).unbind(0)  # (B, 1, H): broadcast over the i f blocks
        view = self.gates.view(steps, batch, 4, hidden)
        delta_rows = self.gates.unbind(0)
        i_f_rows, o_rows, g_rows = view[:, :, :2].unbind(0), view[:, :, 2].unbind(0), view[:, :, 3].unbind(0)
        last = steps - 1
        dc_rows[last].mul_(du_rows[last])
        if carry is not None:
            dc_rows[last].add_(carry)
        i_f_rows[last].mul_(dc_wide[last])
        g_rows[last].mul_(dc_rows[last])
        o_rows[last].mul_(du_rows[last])
        for t in range(last - 1, -1, -1):
            du_rows[t].addmm_(delta_rows[t + 1], w_hh)
            dc_rows[t].mul_(du_rows[t]).addcmul_(forget_rows[t + 1], dc_rows[t + 1])
            i_f_rows[t].mul_(dc_wide[t])
            g_rows[t].mul_(dc_rows[t])
            o_rows[t].mul_(du_rows[t])
        flat = self.gates.view(steps * batch, width)
        grad_w_hh, grad_w_ih, grad_b = _parameter_grads(flat, self.xs, self.outputs, self.h0)
        grad_x = self.gates @ _to_ifog(self.w_ih) if need_x else None
        grad_h0 = self.gates[0] @ w_hh
        grad_b = _from_ifog(grad_b)
        return _Adjoint(
            du, dc, grad_h0, dc[0] * self.forget[0], _from_ifog(grad_w_ih), _from_ifog(grad_w_hh),
            grad_b, grad_b, grad_x,
        )  # fmt: skip


def _gru_adjoint(
    xs: torch.Tensor,
    us: torch.Tensor,
    h0: torch.Tensor,
    du: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    need_x: bool,
) -> _Adjoint:
    """``du`` holds the direct gradient on entry and ∂L/∂u on return.

    Block by block of steps: the input-side gates into ``gates`` and the hidden-side ones into
    ``factors`` (two GEMMs), then ``r, z, n`` in ``gates``, in ``factors``' storage ``F_t`` with
    ``δ_t = F_t ⊙ ∂L/∂u_t`` (the docstring's δ, hidden side), and in ``nu`` the factor
    ``(1 - z_t)(1 - n_t²)`` of ``ν_t``. The loop over t turns ``F_t`` into ``δ_t`` in place.
    """
    steps, batch, hidden = us.shape
    gates = torch.empty(steps, batch, 3, hidden, dtype=us.dtype, device=us.device)
    factors, nu = torch.empty_like(gates), torch.empty_like(us)
    for start, stop in _blocks(steps, batch * 3 * hidden):
        block, hidden_side = gates[start:stop], factors[start:stop]
        torch.addmm(b_ih, xs[start:stop].flatten(0, 1), w_ih.T, out=block.view(-1, 3 * hidden))
        hidden_side.copy_(b_hh.view(3, hidden))
        _recurrent_gemm_(hidden_side.view(stop - start, batch, 3 * hidden), us, h0, w_hh, start, stop)
        block[:, :, :2].add_(hidden_side[:, :, :2]).sigmoid_()
        r, z, n = block.unbind(2)
        f_r, f_z, f_n = hidden_side.unbind(2)  # f_n holds m = W_hn u_{t-1} + b_hn until overwritten
        n.addcmul_(r, f_n).tanh_()
        offset = 0
        for piece in _previous(us, h0, start, stop):  # f_z = (u_{t-1} - n) z (1 - z)
            rows = slice(offset, offset + len(piece))
            torch.sub(piece, n[rows], out=f_z[rows])
            offset += len(piece)
        f_z.mul_(torch.addcmul(z, z, z, value=-1))
        nu_block = torch.sub(1, z, out=nu[start:stop])
        nu_block.addcmul_(nu_block, n * n, value=-1)  # (1 - z)(1 - n²)
        torch.addcmul(r, r, r, value=-1, out=f_r).mul_(f_n).mul_(nu_block)  # ν-factor m r (1 - r)
        torch.mul(nu_block, r, out=f_n)  # ν-factor r
    du_rows, du_wide, z_rows = du.unbind(0), du.unsqueeze(2).unbind(0), gates[:, :, 1].unbind(0)
    factor_rows, delta = factors.unbind(0), factors.view(steps, batch, 3 * hidden)
    delta_rows = delta.unbind(0)
    last = steps - 1
    factor_rows[last].mul_(du_wide[last])
    for t in range(last - 1, -1, -1):
        du_rows[t].addmm_(delta_rows[t + 1], w_hh).addcmul_(du_rows[t + 1], z_rows[t + 1])
        factor_rows[t].mul_(du_wide[t])
    nu.mul_(du)
    grad_h0 = torch.addmm(du[0] * z_rows[0], delta[0], w_hh)
    flat, nu_flat = delta.flatten(0, 1), nu.flatten(0, 1)
    # Hidden side: all of δ; input side: δ's r and z blocks, and ν in place of the n block.
    grad_w_hh, grad_w_ih, grad_b_hh = _parameter_grads(flat, xs, us, h0)
    _, grad_w_in, grad_b_in = _parameter_grads(nu_flat, xs, us, h0, with_hidden=False)
    grad_w_ih[2 * hidden :] = grad_w_in
    grad_b_ih = torch.cat([grad_b_hh[: 2 * hidden], grad_b_in])
    grad_x = None
    if need_x:
        grad_x = torch.addmm(nu_flat @ w_ih[2 * hidden :], flat[:, : 2 * hidden], w_ih[: 2 * hidden])
        grad_x = grad_x.view(steps, batch, -1)
    return _Adjoint(du, None, grad_h0, None, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_x)


def supports_adjoint(spec: FusedSpec) -> bool:
    return spec.kernel in ADJOINT_KERNELS and spec.has_bias


def adjoint_call(
    spec: FusedSpec, inputs: torch.Tensor, state: State
) -> tuple[torch.Tensor, State, AdjointRecord]:
    """Run the layer as the fused forward with the adjoint backward: ``(u, final state, record)``.

    The kernel runs time-major (its own layout: a ``batch_first`` call transposes inside the
    kernel anyway); ``u`` is returned in the layer's layout, as a view.
    """
    record = AdjointRecord(spec)
    h0, c0 = state if isinstance(state, tuple) else (state, torch.zeros_like(state))
    xs = inputs.transpose(0, 1) if spec.batch_first else inputs
    out, hn, cn = _AdjointRecurrence.apply(spec.kernel, record, xs, h0, c0, *spec.weights)
    record.output = out.detach()
    out = out.transpose(0, 1) if spec.batch_first else out
    return out, ((hn, cn) if spec.kernel == "lstm" else hn), record
