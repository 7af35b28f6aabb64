"""The LightningModule (training step, clipping, non-finite policy) and the synthetic data stream."""

from rnnflow.lit.data import SyntheticDataModule
from rnnflow.lit.module import RecurrentTaskModule

__all__ = ["RecurrentTaskModule", "SyntheticDataModule"]
