"""Train one experiment (or a sweep with ``-m``): ``python scripts/train.py [overrides]``.

Examples::

    python scripts/train.py                                   # LSTM on the adding problem, CPU
    python scripts/train.py model=gru task=copy task.seq_len=200 optim.lr=3e-3 trainer.max_steps=2000
    python scripts/train.py -m model=rnn,lstm,gru             # a sweep
    python scripts/train.py ckpt_path=logs/runs/<run>/checkpoints/last.ckpt trainer.max_steps=4000

Returns the value of ``optimized_metric`` (default ``val/loss``) so Hydra sweepers can use it.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from rnnflow.config import ConfigError
from rnnflow.training.run import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except ConfigError as error:
        print(f"rnnflow: invalid config: {error}", file=sys.stderr)
        sys.exit(2)
    return metrics.get(cfg.get("optimized_metric", "val/loss"))


if __name__ == "__main__":
    main()
