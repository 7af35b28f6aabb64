"""Gradient through depth under three initialisations, in plain PyTorch (no rnnflow code).

An independent reference for ``experiment=depth_table``: a 5-layer MLP of width ``n`` (one input
bit ``x ∈ {0, 1}``, target ``x``, logistic loss through a linear head), float64, batch 64. For each
scheme and width, the median over seeds of ``‖∂L/∂W_0‖_F / ‖∂L/∂W_4‖_F`` at initialisation:

* ``normal``: sigmoid, ``W, b ~ N(0, 1)``;
* ``xavier``: sigmoid, ``W ~ N(0, 2 / (fan_in + fan_out))``, ``b = 0``;
* ``he``: ReLU, ``W ~ N(0, 2 / fan_in)``, ``b = 0`` (seeds whose top layer is dead are skipped).

The gain of one sigmoid layer is about ``√(n·Var(w)·E[σ'(a)²])``; with N(0, 1) weights ``E[σ'²]``
falls only as ``1/√n`` while ``n·Var(w)`` grows as ``n``, so N(0, 1) loses *less* gradient per layer
than Xavier at every width above 1. Run: ``python -m benchmarks.depth_init_check``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

LAYERS = 5
SCHEMES = ("normal", "xavier", "he")


def layer0_to_top(width: int, scheme: str, seed: int, batch: int = 64) -> float | None:
    """``‖∂L/∂W_0‖ / ‖∂L/∂W_4‖`` of one seed (None where the top layer's gradient is exactly 0)."""
    generator = torch.Generator().manual_seed(seed)
    activation = torch.relu if scheme == "he" else torch.sigmoid
    dims = [1] + [width] * LAYERS
    weights, biases = [], []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        std = {"normal": 1.0, "xavier": (2.0 / (fan_in + fan_out)) ** 0.5, "he": (2.0 / fan_in) ** 0.5}[
            scheme
        ]
        weights.append(
            (torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) * std).requires_grad_()
        )
        bias = torch.randn(fan_out, generator=generator, dtype=torch.float64) if scheme == "normal" else None
        biases.append(torch.zeros(fan_out, dtype=torch.float64) if bias is None else bias)
    head = torch.randn(1, width, generator=generator, dtype=torch.float64) / width**0.5
    x = torch.randint(0, 2, (batch, 1), generator=generator).double()
    h = x
    for weight, bias in zip(weights, biases, strict=True):
        h = activation(h @ weight.T + bias)
    F.binary_cross_entropy_with_logits(h @ head.T, x).backward()
    bottom, top = (float(w.grad.norm()) for w in (weights[0], weights[-1]))
    return None if top == 0.0 else bottom / top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1,4,32,128")
    parser.add_argument("--seeds", type=int, default=25)
    args = parser.parse_args()
    print(f"layer 0 / top, median over {args.seeds} seeds")
    print("width  " + "  ".join(f"{s:>10}" for s in SCHEMES))
    for width in (int(w) for w in args.widths.split(",")):
        cells = []
        for scheme in SCHEMES:
            ratios = [
                r for r in (layer0_to_top(width, scheme, s) for s in range(args.seeds)) if r is not None
            ]
            cells.append(f"{statistics.median(ratios):10.2e}" if ratios else f"{'all dead':>10}")
        print(f"{width:5d}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
