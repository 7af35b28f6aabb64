"""Host settings: with freed memory kept in the process, a CPU training step stops page-faulting."""

from __future__ import annotations

import sys

import pytest
import torch

from rnnflow.bench.suite import adding_batch, make_model, step_functions
from rnnflow.training.host_settings import retain_freed_host_memory


def faults_per_step(step, steps: int = 3) -> float:
    """Minor page faults per call of ``step`` (after two warm-up calls that settle the heap)."""
    import resource

    step()
    step()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / steps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_kept_memory_stops_page_faults_of_a_training_step():
    # A plain LSTM step at T = 250, H = 128, B = 64: its gate buffers (T·B·4H floats, 33 MB) are
    # above glibc's largest mmap threshold (32 MiB), so by default each is a fresh mmap per step.
    device = torch.device("cpu")
    model = make_model("lstm", 128, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step, _ = step_functions(model, optimizer, *adding_batch(250, 64, device))
    try:
        assert retain_freed_host_memory(False)
        returned = faults_per_step(step)
        assert retain_freed_host_memory(True)
        kept = faults_per_step(step)
    finally:
        retain_freed_host_memory(True)  # rnnflow's default for the rest of the session
    assert returned > 5000  # measured ~48,000 (4 KiB pages); far fewer only with huge pages
    assert kept < returned / 10  # measured 0
