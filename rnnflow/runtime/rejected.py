"""Leave nothing behind for a launch refused before training.

Hydra creates the run dir, its ``.hydra/`` record (``config.yaml``, ``hydra.yaml``,
``overrides.yaml``) and the job's log file (``<job name>.log``: ``train.log``) before it calls the
task function, so a config refused there would leave an empty-looking run dir per attempt.
:func:`remove_rejected_run_dir` removes exactly what Hydra created for this launch, and only when
the run dir holds nothing else. Files written before ``since`` (an earlier launch into the same
dir) and any other file or directory are left alone, and then so is the run dir. Empty parent
directories up to (not including) the working directory are removed too: Hydra created them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _close_log_files(run_dir: Path) -> list[Path]:
    """Close and detach the logging file handlers writing into ``run_dir``; their paths."""
    closed = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            filename = getattr(handler, "baseFilename", None)
            if filename and Path(filename).parent == run_dir:
                handler.close()
                logger.removeHandler(handler)
                closed.append(Path(filename))
    return closed


def remove_rejected_run_dir(run_dir: str | Path, since: float) -> bool:
    """Remove ``run_dir`` if it holds only what Hydra wrote for this launch (at or after ``since``).

    Returns whether it was removed. ``since`` is a ``time.time()`` taken before Hydra started.
    """
    run_dir = Path(run_dir).resolve()
    hydra_dir = run_dir / ".hydra"
    log_files = _close_log_files(run_dir)
    if not run_dir.is_dir():
        return False
    entries = list(run_dir.iterdir())
    logs = {*log_files, *(entry for entry in entries if entry.suffix == ".log" and entry.is_file())}
    if any(entry != hydra_dir and entry not in logs for entry in entries):
        return False
    hydra_entries = list(hydra_dir.iterdir()) if hydra_dir.is_dir() else []
    if any(entry.name not in HYDRA_FILES or not entry.is_file() for entry in hydra_entries):
        return False
    files = [*hydra_entries, *(entry for entry in entries if entry.is_file())]
    # Filesystem timestamps can be coarser than time.time(): allow one second.
    if any(path.stat().st_mtime < since - 1.0 for path in files):
        return False
    for path in files:
        path.unlink()
    if hydra_dir.is_dir():
        hydra_dir.rmdir()
    run_dir.rmdir()
    _remove_empty_parents(run_dir.parent, Path.cwd().resolve())
    return True


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    while directory != stop and stop in directory.parents:
        try:
            os.rmdir(directory)  # only if empty
        except OSError:
            return
        directory = directory.parent
