"""rnnflow: study backpropagation through time in recurrent networks.

Subpackages, one concern each:
    tasks        synthetic long-dependency tasks (pure torch generators, losses, baselines)
    models       RecurrentNet (fused nn.RNN / nn.LSTM / nn.GRU layers) and init schemes
    probes       the math: exact per-step gradient flow, spectra, profile statistics (pure torch)
    callbacks    one Lightning callback per instrument, writing through ``trainer.loggers``
    lit          the LightningModule and the DataModule
    runtime      run mechanics: build, checkpoints, resume, devices, host settings, interrupts, launch
    report       reading runs back into tables and figures
"""

from rnnflow.runtime.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # the configs' ${short_dirname:...} (sweep job directories)
