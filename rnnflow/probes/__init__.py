"""The math of the instruments, pure torch (no Lightning, no TensorBoard): exact per-step gradient
flow through time, its profile statistics, spectra of the recurrent blocks."""
