"""The schema of rnnflow's config: every key, the values it accepts, and the rules between keys.

This table is the one place a setting's accepted values are declared; :mod:`rnnflow.config.validate`
walks a composed config against it, and README's config reference lists the same keys (a test
checks that they agree). A new config key is added here, in ``conf/`` and in README.

Why a table rather than Hydra structured configs (dataclasses in the ConfigStore): OmegaConf 2.3
checks types only. Ranges (``hidden_size >= 1``), finiteness (``lr=inf``), unions
(``trainer.devices``: an int, ``"auto"``, ``"0,1"`` or a list), keys that exist for one cell only
(``model.nonlinearity`` for ``model.cell=rnn``) and rules between keys would still need a second,
hand-written pass, so validation would live in two places; and its type errors are raised inside
Hydra's composition as several lines of OmegaConf detail rather than one line naming the key.

Three groups are open-ended and declared by what they instantiate rather than key by key:

* ``optim``: any ``torch.optim`` optimizer; its keys must be parameters of ``optim._target_``, and
  the parameters torch's optimizers share are declared once by name in :data:`OPTIMIZER_ARGS`.
* ``trainer``: the keys of ``conf/trainer`` are declared in :data:`KEYS`; any other argument of
  ``lightning.pytorch.Trainer`` may be added (``+trainer.limit_val_batches=4``) and is checked by
  Lightning when the Trainer is built.
* ``task``: the shared keys are declared here; each task's own keys are the parameters of its class
  (:func:`rnnflow.tasks.build_task` checks them, in the same one-line form).
* ``callbacks``, ``logger``: ``_target_`` nodes; their keys must be parameters of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnflow.config.kinds import (
    AnyOf,
    Choice,
    Devices,
    Flag,
    Integer,
    Kind,
    Null,
    Pair,
    Real,
    Text,
)
from rnnflow.models import (
    BIAS_SCHEMES,
    CELLS,
    FORGET_BIAS_SCHEMES,
    INPUT_SCHEMES,
    NONLINEARITIES,
    RECURRENT_SCHEMES,
)
from rnnflow.probes.gradient_flow import PROBE_ROUTES
from rnnflow.tasks import TASKS

CLIP_ALGORITHMS = ("norm", "value")
NONFINITE_POLICIES = ("skip", "stop", "raise")
# The largest seed: numpy's and Lightning's seed_everything take an unsigned 32-bit integer.
MAX_SEED = 2**32 - 1
# Precisions rnnflow runs with. The recurrent layers are fused kernels (oneDNN on the CPU, cuDNN on a
# GPU) whose CPU version has no float64 or half-precision-weights form (64-true, 16-true and bf16-true
# fail inside the first forward); mixed precision keeps float32 weights and autocasts the matmuls.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "32", "16", "bf16", 32, 16)
MIXED_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16", 16)
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
GPU_ACCELERATORS = ("gpu", "cuda")


@dataclass(frozen=True)
class Key:
    """One config key: its dotted path, the kind of value, whether ``null`` is accepted, and ``only``.

    ``only = (other_key, values)``: the key belongs to configs whose ``other_key`` is one of ``values``
    (``model.nonlinearity`` to ``model.cell=rnn``); elsewhere it must be absent or null.
    """

    path: str
    kind: Kind
    nullable: bool = False
    only: tuple[str, tuple[str, ...]] | None = None
    doc: str = ""


POSITIVE = Real(0, low_open=True)
NON_NEGATIVE = Real(0)

KEYS: tuple[Key, ...] = (
    # --- top level
    Key("seed", Integer(0, MAX_SEED), doc="seed of the data stream and the initial weights"),
    Key("ckpt_path", Text(), nullable=True, doc="resume from this checkpoint"),
    Key("optimized_metric", Text(), doc="metric returned to Hydra sweepers"),
    Key("cpu_flush_denormal", Flag(), doc="CPU: flush subnormal floats to zero"),
    Key("cpu_keep_freed_memory", Flag(), doc="CPU (glibc): keep freed memory in the process"),
    # --- model
    Key("model.cell", Choice(tuple(CELLS)), doc="rnn | lstm | gru (set by model=...)"),
    Key("model.hidden_size", Integer(1)),
    Key("model.num_layers", Integer(1)),
    Key("model.nonlinearity", Choice(NONLINEARITIES), only=("model.cell", ("rnn",))),
    Key("model.residual", Flag(), doc="add each layer's input to its output (layers >= 1)"),
    Key("model.layer_norm", Flag(), doc="LayerNorm on each layer's output"),
    Key("model.init.recurrent", Choice(RECURRENT_SCHEMES)),
    Key("model.init.input", Choice(INPUT_SCHEMES)),
    Key("model.init.bias", Choice(BIAS_SCHEMES)),
    Key("model.init.std", POSITIVE, nullable=True, doc="std of the normal scheme (null = 1/sqrt(fan_in))"),
    Key("model.init.spectral_radius", POSITIVE, nullable=True),
    Key(
        "model.init.forget_bias",
        AnyOf((Real(), Choice(FORGET_BIAS_SCHEMES)), "a finite number, " + ", ".join(FORGET_BIAS_SCHEMES)),
        nullable=True,
        only=("model.cell", ("lstm",)),
        doc="total forget-gate bias, or chrono",
    ),
    Key(
        "model.init.chrono_max",
        Real(2, low_open=True),
        nullable=True,
        only=("model.cell", ("lstm",)),
        doc="T_max of forget_bias=chrono (null = task.seq_len)",
    ),
    # --- task (each task's own keys: the parameters of its class)
    Key("task.name", Choice(tuple(sorted(TASKS)))),
    Key("task.seq_len", Integer(1)),
    Key("task.batch_size", Integer(1)),
    Key("task.val_batches", Integer(1)),
    # --- optimisation
    Key("clip.max_norm", POSITIVE, nullable=True, doc="null = no clipping"),
    Key("clip.algorithm", Choice(CLIP_ALGORITHMS)),
    Key("tbptt.chunk", Integer(1), nullable=True, doc="truncated BPTT chunk length; null = full BPTT"),
    Key("nonfinite.policy", Choice(NONFINITE_POLICIES)),
    Key("nonfinite.max_consecutive", Integer(1)),
    # --- checkpoints
    Key("checkpoint.every_n_steps", Integer(1), nullable=True, doc="checkpoints/last.ckpt every N steps"),
    # --- diagnostics
    Key("diagnostics.every_n_steps", Integer(1), nullable=True),
    Key("diagnostics.spectral_every_n_steps", Integer(1), nullable=True),
    Key("diagnostics.figure_every_n_steps", Integer(1), nullable=True),
    Key("diagnostics.horizon_factor", Real(0, 1, low_open=True, high_open=True)),
    Key("diagnostics.probe_route", Choice(PROBE_ROUTES)),
    Key("diagnostics.activations", Flag(), doc="activations/L/*"),
    Key("diagnostics.saturation_threshold", Real(0, 1, low_open=True, high_open=True)),
    Key("diagnostics.gates", Flag(), doc="gates/L/*"),
    Key("diagnostics.lyapunov", Flag(), doc="dynamics/L/lyapunov_max"),
    Key("diagnostics.lyapunov_count", Integer(1), doc="at most the state dimension"),
    Key("diagnostics.lyapunov_sequences", Integer(1)),
    Key("diagnostics.lyapunov_qr_every", Integer(1)),
    Key("diagnostics.lyapunov_segment", Integer(1), nullable=True, doc="null = one pass over all steps"),
    Key("diagnostics.credit", Flag(), doc="grad_flow/L/early_share"),
    Key("diagnostics.parameters", Flag(), doc="param_grad/*, params/L/*"),
    Key("diagnostics.explain_sequences", Integer(1), nullable=True),
    Key("diagnostics.verdict", Flag(), doc="one line per layer at the end of the run"),
    # --- trainer (conf/trainer; other Trainer arguments are checked by Lightning)
    Key("trainer._target_", Text()),
    Key("trainer.accelerator", Choice(ACCELERATORS)),
    Key("trainer.devices", Devices()),
    Key("trainer.strategy", Text()),
    Key("trainer.num_nodes", Integer(1)),
    Key(
        "trainer.precision",
        AnyOf((Choice(PRECISIONS),), "one of 32-true, 16-mixed, bf16-mixed (or 32, 16, bf16)"),
    ),
    Key("trainer.max_steps", Integer(1)),
    Key("trainer.val_check_interval", Integer(1), doc="validate every N training steps"),
    Key(
        "trainer.check_val_every_n_epoch",
        Null("null (the training stream is endless: validation counts steps, trainer.val_check_interval)"),
    ),
    Key("trainer.num_sanity_val_steps", AnyOf((Integer(0), Choice((-1,))))),
    Key("trainer.log_every_n_steps", Integer(1)),
    Key("trainer.enable_model_summary", Flag()),
    Key("trainer.enable_progress_bar", Flag()),
    Key("trainer.deterministic", Choice((True, False, "warn"))),
    Key("trainer.default_root_dir", Text()),
    Key("trainer.gradient_clip_val", NON_NEGATIVE, nullable=True, doc="Lightning clips; clip/* is logged"),
    Key("trainer.gradient_clip_algorithm", Choice(CLIP_ALGORITHMS), nullable=True),
    # --- paths
    Key("paths.log_dir", Text()),
    Key("paths.output_dir", Text()),
)

BY_PATH: dict[str, Key] = {key.path: key for key in KEYS}

# Groups whose keys are all declared above (an unknown key there is refused with the closest one).
CLOSED_GROUPS = ("model", "clip", "tbptt", "nonfinite", "checkpoint", "diagnostics", "paths")
# Groups of ``_target_`` nodes whose keys are the target's parameters.
INSTANTIATED_GROUPS = ("callbacks", "logger")

# Parameters of torch's optimizers, declared once by name (the same name means the same thing in every
# torch.optim class); ``lr`` is required. Another optimizer's parameters are refused if not finite.
OPTIMIZER_ARGS: dict[str, tuple[Kind, bool]] = {  # name -> (kind, nullable)
    "lr": (POSITIVE, False),
    "momentum": (NON_NEGATIVE, False),
    "dampening": (Real(0, 1), False),
    "weight_decay": (NON_NEGATIVE, False),
    "eps": (NON_NEGATIVE, False),
    "betas": (Pair((Real(0, 1, high_open=True), Real(0, 1, high_open=True))), False),
    "alpha": (NON_NEGATIVE, False),
    "rho": (Real(0, 1), False),
    "lr_decay": (NON_NEGATIVE, False),
    "initial_accumulator_value": (NON_NEGATIVE, False),
    "momentum_decay": (NON_NEGATIVE, False),
    "nesterov": (Flag(), False),
    "amsgrad": (Flag(), False),
    "centered": (Flag(), False),
    "maximize": (Flag(), False),
    "capturable": (Flag(), False),
    "differentiable": (Flag(), False),
    "decoupled_weight_decay": (Flag(), False),
    "foreach": (Flag(), True),
    "fused": (Flag(), True),
}
