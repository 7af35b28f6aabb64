"""One Lightning callback per instrument; each owns its state and writes through ``trainer.loggers``."""

from rnnflow.callbacks.clipping import ClipMonitor
from rnnflow.callbacks.gradient_flow import GradientFlowMonitor
from rnnflow.callbacks.spectral import SpectralMonitor

__all__ = ["ClipMonitor", "GradientFlowMonitor", "SpectralMonitor"]
