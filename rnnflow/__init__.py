"""rnnflow: study backpropagation through time in recurrent networks.

Subpackages:
    tasks        synthetic long-dependency tasks (pure torch generators, losses, baselines)
    models       RecurrentNet (fused nn.RNN / nn.LSTM / nn.GRU layers) and init schemes
    diagnostics  pure functions: gradient flow through time, spectra, clipping
    training     LightningModule, LightningDataModule and TensorBoard callbacks
    report       reading event files back into tables and figures
"""

from rnnflow.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # the configs' ${short_dirname:...} (sweep job directories)
