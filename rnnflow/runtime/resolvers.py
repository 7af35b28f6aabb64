"""OmegaConf resolvers used by rnnflow's configs (registered when ``rnnflow`` is imported).

``${short_dirname:${hydra.job.override_dirname}}`` keeps a sweep job's directory name readable
and within file-system limits: the overrides as they are when they fit in ``max_length``
characters, else their first characters and a hash of the whole (unique per job).

``${slurm_gpus:${trainer.accelerator},${trainer.devices}}`` is the GPU count a SLURM job asks
for: the devices of a GPU trainer, null for a CPU one (:func:`rnnflow.runtime.slurm.gpus_per_node`).
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf


def short_dirname(overrides: str, max_length: int = 120) -> str:
    if len(overrides) <= max_length:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
    return f"{overrides[: max_length - 11]}~{digest}"


def register_resolvers() -> None:
    from rnnflow.runtime.slurm import register_resolver as register_slurm_resolver

    register_slurm_resolver()
    if not OmegaConf.has_resolver("short_dirname"):
        OmegaConf.register_new_resolver("short_dirname", short_dirname)
