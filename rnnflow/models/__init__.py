"""Models: RecurrentNet and its initialisation schemes."""

from rnnflow.models.fused import FusedSpec, SigmoidRNN, fused_spec, run_fused
from rnnflow.models.init import (
    BIAS_SCHEMES,
    FORGET_BIAS_SCHEMES,
    GATES,
    INPUT_SCHEMES,
    RECURRENT_SCHEMES,
    initialise_recurrent_layer_,
    spectral_radius,
)
from rnnflow.models.recurrent_net import CELLS, NONLINEARITIES, RecurrentNet

__all__ = [
    "BIAS_SCHEMES",
    "CELLS",
    "FORGET_BIAS_SCHEMES",
    "GATES",
    "INPUT_SCHEMES",
    "NONLINEARITIES",
    "RECURRENT_SCHEMES",
    "FusedSpec",
    "RecurrentNet",
    "SigmoidRNN",
    "fused_spec",
    "run_fused",
    "initialise_recurrent_layer_",
    "spectral_radius",
]
