"""rnnflow on a plain PyTorch model: exact ‖∂L/∂h_t‖ at every step of every recurrent layer.

    python examples/plain_pytorch.py

A sequence classifier of its own (a 2-layer bidirectional LSTM, batch_first, whose head reads the
final states), trained a few steps by a hand-written loop; one step in ten is probed.
"""

from __future__ import annotations

import torch
from torch import nn

import rnnflow


class Classifier(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.encoder = nn.LSTM(features, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.encoder(x)
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))  # last layer, both directions


def main(steps: int = 30, seq_len: int = 60) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss()
    profiles: dict[str, torch.Tensor] = {}
    for step in range(steps):
        x = torch.randn(16, seq_len, 8)
        y = (x[:, 0, 0] > 0).long() + 2 * (x[:, 0, 1] > 0).long()  # the label sits at t = 0
        optimizer.zero_grad()
        if step % 10 == 0:
            with rnnflow.gradient_flow(model) as flow:
                loss = criterion(model(x), y)
                loss.backward()
            profiles = flow.profiles
            for name, profile in profiles.items():
                ratio = torch.log10(profile[0] / profile[-1])
                print(f"step {step:3d}  {name:28s} log10 ‖∂L/∂h_0‖/‖∂L/∂h_T-1‖ = {float(ratio):+.2f}")
        else:
            loss = criterion(model(x), y)
            loss.backward()
        optimizer.step()
    return profiles


if __name__ == "__main__":
    main()
