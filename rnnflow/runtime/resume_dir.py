"""Where a resumed run writes: into its checkpoint's run dir, when it continues that experiment.

``ckpt_path=<run>/checkpoints/last.ckpt`` resumes the run in ``<run>``: the logger writes a new
event file into ``<run>/tb`` (TensorBoard shows one run whose steps continue) and
``last.ckpt`` is updated in place. Hydra's own output dir of the resuming command keeps only
its ``.hydra/`` record and log.

That is right for a continuation, not for a branch. A resume whose overrides differ from the
original run's (``<run>/.hydra/overrides.yaml``) in anything that defines the experiment
(model, task, optim, clip, seed, ...) writes to its own run dir instead, so that several jobs
branching off one checkpoint (``-m ckpt_path=... optim.lr=1e-3,1e-4``) do not overwrite the
original run and each other. Run mechanics may change freely: ``trainer.*`` (``max_steps``,
devices, precision, logging), ``diagnostics.*``, ``hydra.*``, ``paths.*``, ``debug``.

The continued run's ``train.log`` gets the resumed launch's log lines too (:func:`log_into`,
appended, the same format as Hydra's log file), so that it tells the whole story of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from rnnflow.config import ConfigError

log = logging.getLogger(__name__)

RUN_MECHANICS = (
    "ckpt_path",
    "checkpoint",
    "trainer",
    "diagnostics",
    "hydra",
    "paths",
    "debug",
    "cpu_flush_denormal",
    "cpu_keep_freed_memory",
    "optimized_metric",
)


def experiment_overrides(overrides: Iterable[str]) -> set[str]:
    """The overrides that define the experiment: every one but the run mechanics (``RUN_MECHANICS``)."""
    kept = set()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0].split("/", 1)[0] not in RUN_MECHANICS:
            kept.add(override.lstrip("+"))
    return kept


def resume_run_dir(ckpt_path: str | None, overrides: Iterable[str] | None = None) -> Path | None:
    """The run dir a resume from ``ckpt_path`` writes into, or None for a run dir of its own.

    ``<run>`` for a checkpoint ``<run>/checkpoints/<name>.ckpt`` of a run with a ``tb/`` dir,
    unless ``overrides`` (the resuming command's) change the experiment of ``<run>``'s
    recorded overrides. Raises :class:`ConfigError` if ``ckpt_path`` is not a file.
    """
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: expected an existing checkpoint file")
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints" or not (run_dir / "tb").is_dir():
        return None
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if overrides is not None and recorded.is_file():
        original = experiment_overrides(OmegaConf.to_container(OmegaConf.load(recorded)))
        changed = sorted(experiment_overrides(overrides) ^ original)
        if changed:
            log.warning(
                "resuming with other experiment overrides than %s (%s): a branch, written to its own run dir",
                run_dir,
                " ".join(changed),
            )
            return None
    return run_dir


@contextmanager
def log_into(run_dir: Path, launch_dir: Path) -> Iterator[None]:
    """While the block runs, append the root logger's lines to ``<run_dir>/train.log`` as well.

    ``launch_dir`` is Hydra's output dir of this launch, whose own log file keeps its lines. Nothing
    is added where the two are the same dir, or where no file handler (Hydra's) is configured.
    """
    root = logging.getLogger()
    hydra_files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if Path(run_dir).resolve() == Path(launch_dir).resolve() or not hydra_files:
        yield
        return
    handler = logging.FileHandler(Path(run_dir) / "train.log", mode="a", encoding="utf-8")
    handler.setFormatter(hydra_files[0].formatter)
    handler.setLevel(hydra_files[0].level)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
