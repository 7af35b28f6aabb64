"""rnnflow: study backpropagation through time in recurrent networks.

Subpackages, one concern each:
    tasks        synthetic long-dependency tasks (pure torch generators, losses, baselines)
    models       RecurrentNet (fused nn.RNN / nn.LSTM / nn.GRU layers) and init schemes
    probes       the math: exact per-step gradient flow, spectra, profile statistics (pure torch)
    callbacks    one Lightning callback per instrument, writing through ``trainer.loggers``
    lit          the LightningModule and the DataModule
    runtime      run mechanics: build, checkpoints, resume, devices, host settings, interrupts, launch
    report       reading runs back into tables and figures

The instruments on any model (public API)::

    from rnnflow import GradientFlowMonitor, SpectralMonitor, ClipMonitor
    trainer = Trainer(callbacks=[GradientFlowMonitor(every_n_steps=50), SpectralMonitor(), ClipMonitor()])

    with rnnflow.gradient_flow(model) as flow:       # plain PyTorch
        loss = criterion(model(x), y)
        loss.backward()
    flow.profiles["rnn/layer0"]                      # (T,) ‖∂L/∂h_t‖ for every t
"""

from rnnflow.callbacks.clipping import ClipMonitor
from rnnflow.callbacks.gradient_flow import GradientFlowMonitor
from rnnflow.callbacks.probe_listener import ProbeListener
from rnnflow.callbacks.spectral import SpectralMonitor
from rnnflow.probes.gradient_flow import GradientFlow, GradientFlowProbe, LayerBackward, gradient_flow
from rnnflow.runtime.resolvers import register_resolvers

__version__ = "0.1.0"
__all__ = [
    "ClipMonitor",
    "GradientFlow",
    "GradientFlowMonitor",
    "GradientFlowProbe",
    "LayerBackward",
    "ProbeListener",
    "SpectralMonitor",
    "gradient_flow",
]

register_resolvers()  # the configs' ${short_dirname:...} (sweep job directories)
