"""rnnflow on your own LightningModule: two lines add the exact gradient flow, spectra and clipping.

    python examples/lightning_model.py [run dir]      # then: tensorboard --logdir <run dir>

The model is a GRU encoder with a linear head, written without rnnflow; the callbacks find its
recurrent module by themselves and write ``grad_flow/layer0/...``, ``spectral/layer0/...`` and
``clip/...`` through the trainer's loggers (TensorBoard and CSV here).
"""

from __future__ import annotations

import sys
import tempfile

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rnnflow import ClipMonitor, GradientFlowMonitor, SpectralMonitor


class SequenceRegressor(L.LightningModule):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.rnn = nn.GRU(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out, _ = self.rnn(x)
        loss = nn.functional.mse_loss(self.head(out[:, -1]).squeeze(-1), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def adding_problem(n: int = 512, seq_len: int = 50) -> TensorDataset:
    """The adding problem: the sum of the two marked values (the target depends on t = 0 … T-1)."""
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(n, seq_len, generator=generator)
    marks = torch.zeros(n, seq_len)
    marks[:, 0] = 1
    marks[torch.arange(n), torch.randint(1, seq_len, (n,), generator=generator)] = 1
    return TensorDataset(torch.stack([values, marks], dim=-1), (values * marks).sum(dim=1))


def main(run_dir: str, max_steps: int = 40) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_steps=max_steps,
        callbacks=[GradientFlowMonitor(every_n_steps=10), SpectralMonitor(every_n_steps=10), ClipMonitor()],
        gradient_clip_val=1.0,  # Lightning clips; ClipMonitor logs every event
        logger=[
            TensorBoardLogger(run_dir, name="tb", version=""),
            CSVLogger(run_dir, name="csv", version=""),
        ],
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SequenceRegressor(), DataLoader(adding_problem(), batch_size=32, shuffle=True))
    return trainer


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="rnnflow-example-"))
