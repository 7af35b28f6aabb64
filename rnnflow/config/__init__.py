"""rnnflow's config: one declared schema (:mod:`rnnflow.config.schema`) and its checks.

``validate_config(cfg)`` refuses a composed config with one line naming the key
(:class:`ConfigError`) before anything is built; ``check_command_line(argv)`` does the same for a
mistyped key on the command line, before Hydra composes.
"""

from rnnflow.config.kinds import ConfigError
from rnnflow.config.validate import validate_config

__all__ = ["ConfigError", "validate_config"]
