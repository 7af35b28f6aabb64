"""Variable-length sequences, left-padded to a fixed length so the read-out stays at the last step.

Where the original task draws a length per sequence (Hochreiter & Schmidhuber 1997: "random lengths
between the minimal sequence length T and T + T/10"; the adding and multiplication problems of
Martens & Sutskever 2011 and Pascanu et al. 2013: T' between T and 1.1 T), sequence ``b`` of a batch
has length

    L_b ~ U{T, T + 1, …, T + ⌊T/10⌋}

and is *left*-padded to the fixed input length ``T_max = T + ⌊T/10⌋``: it occupies steps
``s_b … T_max - 1`` with ``s_b = T_max - L_b``; steps ``0 … s_b - 1`` are zero feature vectors.

Why on the left: the network's read-out at its last step is then every sequence's own end, so the
model interface (read out the last step, or every step) is unchanged and the loss reads the right
step for every sequence. The lengths travel with the batch (``TaskBatch.lengths``) for a model or an
analysis that wants them (e.g. ``pack_padded_sequence``, or a mask over steps).

A zero input carries no information, but it is not invisible: with a bias, ``h_t = φ(W h_{t-1} + b)``
still moves during the padding, so a sequence starts from a state that depends on its pad length
(the same state for every sequence with that pad). Tasks that mark their first step (the -1 marker of
H&S's adding problem, the start symbol of their temporal order problem) let the network tell the
padding from the sequence.
"""

from __future__ import annotations

import torch

from rnnflow.tasks.base import uniform_int


def max_length(seq_len: int) -> int:
    """``T_max = T + ⌊T/10⌋``, the padded length of sequences of lengths in ``[T, 1.1 T]``."""
    return seq_len + seq_len // 10


def draw_lengths(
    seq_len: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``(B,)`` long lengths uniform in ``{T, …, T + ⌊T/10⌋}``."""
    return uniform_int(seq_len, max_length(seq_len) + 1, batch_size, generator, device)


def sequence_starts(lengths: torch.Tensor, total_len: int) -> torch.Tensor:
    """``(B,)`` first step of each left-padded sequence: ``s_b = T_max - L_b``."""
    return total_len - lengths


def step_mask(lengths: torch.Tensor, total_len: int) -> torch.Tensor:
    """``(B, T_max)`` bool, True on the steps that belong to the sequence (False on the padding)."""
    steps = torch.arange(total_len, device=lengths.device)
    return steps >= sequence_starts(lengths, total_len)[:, None]
