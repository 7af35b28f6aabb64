"""Benchmarks of rnnflow's training step and its gradient-flow probes (``scripts/bench.py``).

:mod:`benchmarks.timing` holds the timing helpers (interleaved medians, a per-batch clock
for Lightning, activation memory); :mod:`benchmarks.suite` the comparisons themselves.
"""
