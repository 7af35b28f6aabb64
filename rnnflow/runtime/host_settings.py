"""Process-wide CPU settings of a run: flush subnormal floats, keep freed host memory.

``cpu_flush_denormal``: vanishing gradients underflow into subnormal floats, which the CPU
handles slowly on some CPUs (up to ~2.7x measured for a plain LSTM step on one machine, ~1.0x
on others; ``scripts/bench.py`` reports ``denormal_slowdown``). Flushing them to zero changes
values below float32's smallest normal number (~1.2e-38) only.

``cpu_keep_freed_memory``: keep freed host memory in the process, so that a CPU training step
does not page-fault.

PyTorch's CPU allocator takes tensor storage from the C library's ``malloc``. glibc serves every
request above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and hands it back to the
kernel with ``munmap`` on free, so the big per-step buffers of a fused RNN (the gates of all T
steps, their gradients) are faulted in and zeroed by the kernel, page by page, at every step.
Measured here (2 cores, torch 2.13, plain LSTM step, H = 128, B = 64, one fresh process per
setting): about 48,000 minor page faults per step at T = 250 and 190,000 at T = 1000, half the
step's time; with freed memory kept (this module) none, and the step takes 75 ms instead of
147 ms at T = 250, 290 ms instead of 575 ms at T = 1000, 1,140 ms instead of 2,460 ms at
T = 4000. ``scripts/bench.py`` measures it side by side (``host_memory_speedup``). The GRU step
(T = 1000) gains 1.15-1.25x, the vanilla RNN's (smaller buffers) 1.05x.

PyTorch's own tuning guide gets the same by preloading jemalloc or tcmalloc (``LD_PRELOAD``),
which must happen before the process starts and needs a library installed. glibc's ``mallopt``
does it from inside the running process, which is why it is done by hand here:

* ``M_MMAP_MAX = 0``: no request is served by ``mmap``; all come from the heap, where a freed
  block is reused by the next step's request of about the same size;
* ``M_TRIM_THRESHOLD = -1``: free memory at the top of the heap is never returned to the
  kernel (mallopt(3): -1 disables trimming; returning it is what would make the next step fault
  again: any finite threshold below a long sequence's activations, e.g. 2 GiB at T = 4000, does).

The cost: the process keeps its peak host memory until it exits (a training process reaches its
peak in the first step anyway; measured maximum RSS +5 to +20 %). Nothing numerical changes.
On a C library without ``mallopt`` (macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_host_memory() -> bool:
    """Make glibc keep freed memory for reuse; False where there is no glibc or it refused."""
    libc = _glibc()
    if libc is None:
        return False
    accepted = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    if not accepted:
        log.warning("glibc mallopt refused the host-memory settings; CPU steps may page-fault")
    return accepted


def apply_host_settings(flush_denormal: bool, keep_freed_memory: bool) -> bool:
    """Set this process's CPU settings (process state, not part of the model).

    Returns whether freed host memory is now kept. Flushing is set either way (a run with
    ``cpu_flush_denormal=false`` keeps subnormals even after an earlier run in the same process
    turned flushing on); keeping freed memory, when off, is left as the process has it: glibc's
    allocator cannot be put back to a fresh process's state.
    """
    torch.set_flush_denormal(flush_denormal)
    return keep_freed_host_memory() if keep_freed_memory else False


class HostSettings(L.Callback):
    """Applies :func:`apply_host_settings` in every training process.

    ``train`` applies them in the launching process; processes that Lightning starts itself
    (``ddp_spawn``: fresh interpreters) get them here, at ``setup``, before the first step.
    """

    def __init__(self, flush_denormal: bool, keep_freed_memory: bool) -> None:
        self.flush_denormal = flush_denormal
        self.keep_freed_memory = keep_freed_memory

    def apply(self) -> bool:
        return apply_host_settings(self.flush_denormal, self.keep_freed_memory)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, *args: Any) -> None:
        self.apply()
