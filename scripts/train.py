"""Train one experiment (or a sweep with ``-m``): ``python scripts/train.py [overrides]``.

Examples::

    python scripts/train.py                                   # LSTM on the adding problem, CPU
    python scripts/train.py model=gru task=copy task.seq_len=200 optim.lr=3e-3 trainer.max_steps=2000
    python scripts/train.py -m model=rnn,lstm,gru             # a sweep
    python scripts/train.py ckpt_path=logs/runs/<run>/checkpoints/last.ckpt trainer.max_steps=4000

Returns the value of ``optimized_metric`` (default ``val/loss``) so Hydra sweepers can use it.
A bad config value or a mistyped key exits with status 2 and one line naming the key, before
anything is built, and leaves no run dir behind (:mod:`rnnflow.runtime.rejected`). In a sweep, a failing job
is recorded in its ``failure.txt`` and the sweep goes on (see :mod:`rnnflow.runtime.sweep`).
SIGTERM or Ctrl-C stops before the next batch, saves ``checkpoints/last.ckpt`` and exits with
status 143 or 130 (a sweep stops there; see :mod:`rnnflow.runtime.interrupt`).
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from rnnflow.config import ConfigError
from rnnflow.config.command_line import check_command_line
from rnnflow.runtime.checkpoint import CheckpointWriteError
from rnnflow.runtime.interrupt import interrupt_exit_status
from rnnflow.runtime.rejected import remove_rejected_run_dir
from rnnflow.runtime.run import train
from rnnflow.runtime.run_lock import RunDirInUse
from rnnflow.runtime.sweep import record_failure

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
STARTED = time.time()  # what Hydra writes for this launch is newer


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_number = hydra_cfg.job.num if multirun else None
    try:
        metrics = train(cfg, multirun=multirun, job_number=job_number)
    except SIGTERMException as stop:  # checkpoint saved (InterruptCheckpoint): stop, say so in the status
        sys.exit(interrupt_exit_status(stop))
    except ConfigError as error:
        message = f"rnnflow: invalid config: {error}"
        if not multirun:
            remove_rejected_run_dir(hydra_cfg.runtime.output_dir, since=STARTED)
            print(message, file=sys.stderr)
            sys.exit(2)
        record_failure(Path(hydra_cfg.runtime.output_dir), message)
        return math.nan
    except (RunDirInUse, CheckpointWriteError) as error:  # a busy run dir, a full disk: one line
        if not multirun:
            if isinstance(error, RunDirInUse):  # refused before training: nothing of this launch is kept
                remove_rejected_run_dir(hydra_cfg.runtime.output_dir, since=STARTED)
            print(f"rnnflow: {error}", file=sys.stderr)
            sys.exit(2 if isinstance(error, RunDirInUse) else 1)
        record_failure(Path(hydra_cfg.runtime.output_dir), f"rnnflow: {error}")
        return math.nan
    except Exception as error:
        status = interrupt_exit_status(error)  # a ddp_spawn worker that stopped on SIGTERM/Ctrl-C
        if status is not None:
            sys.exit(status)
        if not multirun:
            raise
        record_failure(Path(hydra_cfg.runtime.output_dir), traceback.format_exc())
        return math.nan
    return metrics.get(cfg.get("optimized_metric", "val/loss"))


if __name__ == "__main__":
    try:  # a mistyped key: the closest valid one, rather than Hydra's advice to prepend "+"
        check_command_line(sys.argv[1:], CONFIG_DIR, "train")
    except ConfigError as error:
        print(f"rnnflow: invalid config: {error}", file=sys.stderr)
        sys.exit(2)
    main()
