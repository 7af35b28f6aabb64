"""Lightning side of rnnflow: the module, the data stream, callbacks and the run builder."""

from rnnflow.training.data import SyntheticDataModule
from rnnflow.training.module import RecurrentTaskModule

__all__ = ["RecurrentTaskModule", "SyntheticDataModule"]
