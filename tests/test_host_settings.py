"""Host settings: with freed memory kept in the process, a CPU training step stops page-faulting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from benchmarks.host_memory import __name__ as CHILD


def page_faults_per_step(keep: bool) -> float:
    """Median minor page faults of a plain LSTM step (T = 250, H = 128, B = 64) in a fresh process."""
    command = [sys.executable, "-m", CHILD, "--keep", str(int(keep)), "--steps", "250", "--repeats", "3"]
    row = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()[-1]
    )
    assert row["applied"] == keep
    return sorted(row["faults"])[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_kept_memory_stops_page_faults_of_a_training_step():
    # The step's gate buffers (T·B·4H floats, 33 MB) are above glibc's largest mmap threshold
    # (32 MiB), so by default each is a fresh mmap at every step, faulted in page by page.
    returned = page_faults_per_step(keep=False)
    kept = page_faults_per_step(keep=True)
    assert returned > 5000  # measured ~48,000 (4 KiB pages); far fewer only with huge pages
    assert kept < returned / 10  # measured 0


def test_flush_denormal_follows_the_setting_both_ways():
    """``cpu_flush_denormal=false`` keeps subnormals even after a run in this process turned flushing on."""
    from rnnflow.runtime.host_settings import apply_host_settings

    subnormal = 1e-323  # float64's subnormal range
    try:
        apply_host_settings(flush_denormal=True, keep_freed_memory=False)
        assert float(torch.tensor([subnormal], dtype=torch.float64)) == 0.0
        apply_host_settings(flush_denormal=False, keep_freed_memory=False)
        assert float(torch.tensor([subnormal], dtype=torch.float64)) > 0.0
    finally:
        torch.set_flush_denormal(True)  # rnnflow's default, as the training runs of this process set it
