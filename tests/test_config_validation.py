"""Bad input fails before anything is built, with one line naming the key and the accepted values."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import torch
from conftest import ROOT, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from rnnflow.config import ConfigError, validate_config

BAD_VALUES = [
    ("task.seq_len=0", "task.seq_len=0", "integer >= 1"),
    ("task.seq_len=-5", "task.seq_len=-5", "integer >= 1"),
    ("task.batch_size=0", "task.batch_size=0", "integer >= 1"),
    ("model.hidden_size=0", "model.hidden_size=0", "integer >= 1"),
    ("model.num_layers=0", "model.num_layers=0", "integer >= 1"),
    ("model.init.recurrent=banana", "model.init.recurrent='banana'", "orthogonal, identity, zeros"),
    ("model.init.input=identity", "model.init.input='identity'", "one of default"),
    ("model.init.spectral_radius=0", "model.init.spectral_radius=0", "number > 0"),
    ("model.init.spectral_radius=-1", "model.init.spectral_radius=-1", "number > 0"),
    ("optim.lr=-0.1", "optim.lr=-0.1", "number > 0"),
    ("clip.max_norm=-1", "clip.max_norm=-1", "number > 0 or null"),
    ("clip.algorithm=median", "clip.algorithm='median'", "one of norm, value"),
    ("tbptt.chunk=0", "tbptt.chunk=0", "integer >= 1 or null"),
    ("nonfinite.policy=ignore", "nonfinite.policy='ignore'", "skip, stop, raise"),
    ("diagnostics.every_n_steps=0", "diagnostics.every_n_steps=0", "integer >= 1 or null"),
    ("diagnostics.horizon_factor=2", "diagnostics.horizon_factor=2", "(0, 1)"),
    ("cpu_keep_freed_memory=banana", "cpu_keep_freed_memory='banana'", "true or false"),
    ("cpu_flush_denormal=1", "cpu_flush_denormal=1", "true or false"),
    # non-finite numbers, wherever a number is accepted
    ("optim.lr=inf", "optim.lr=inf", "finite number > 0"),
    ("optim.lr=nan", "optim.lr=nan", "finite number > 0"),
    ("model.init.spectral_radius=inf", "model.init.spectral_radius=inf", "finite number > 0 or null"),
    ("model.init.std=inf", "model.init.std=inf", "finite number > 0 or null"),
    ("model.init.forget_bias=nan", "model.init.forget_bias=nan", "finite number, chrono or null"),
    ("model.init.forget_bias=-inf", "model.init.forget_bias=-inf", "finite number, chrono or null"),
    ("clip.max_norm=inf", "clip.max_norm=inf", "finite number > 0 or null"),
    ("diagnostics.horizon_factor=nan", "diagnostics.horizon_factor=nan", "finite number in (0, 1)"),
    ("optim.weight_decay=inf", "optim.weight_decay=inf", "finite number >= 0"),
    ("optim.betas=[0.9,nan]", "optim.betas=[0.9, nan]", "each a finite number in [0, 1)"),
    ("+trainer.gradient_clip_val=inf", "trainer.gradient_clip_val=inf", "finite number >= 0 or null"),
    # booleans are booleans
    ("model.residual=banana", "model.residual='banana'", "true or false"),
    ("model.layer_norm=2", "model.layer_norm=2", "true or false"),
    ("model.residual=1", "model.residual=1", "true or false"),
    # integers are integers, in range
    ("task.seq_len=12.5", "task.seq_len=12.5", "integer >= 1"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0", "integer >= 1"),
    ("trainer.max_steps=0", "trainer.max_steps=0", "integer >= 1"),
    ("trainer.val_check_interval=0.5", "trainer.val_check_interval=0.5", "integer >= 1"),
    ("seed=4294967296", "seed=4294967296", "integer in [0, 4294967295]"),
    ("seed=-1", "seed=-1", "integer in [0, 4294967295]"),
    ("trainer.devices=0", "trainer.devices=0", "integer >= 1, -1 (all)"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0", "integer >= 1"),
    (
        "trainer.check_val_every_n_epoch=1",
        "trainer.check_val_every_n_epoch=1",
        "the training stream is endless",
    ),
    # optimizer arguments
    ("optim.weight_decay=-1", "optim.weight_decay=-1", "finite number >= 0"),
    ("optim.betas=[2,0.999]", "optim.betas=[2, 0.999]", "each a finite number in [0, 1)"),
    ("optim.betas=[0.9]", "optim.betas=[0.9]", "a list of 2 values"),
    ("optim.lr=0", "optim.lr=0", "finite number > 0"),
    # trainer keys
    ("trainer.precision=64-true", "trainer.precision='64-true'", "one of 32-true, 16-mixed, bf16-mixed"),
    ("trainer.precision=16-true", "trainer.precision='16-true'", "one of 32-true, 16-mixed, bf16-mixed"),
    ("trainer.precision=bf16-true", "trainer.precision='bf16-true'", "one of 32-true, 16-mixed, bf16-mixed"),
    ("trainer.accelerator=tpu2", "trainer.accelerator='tpu2'", "one of cpu, gpu, cuda, mps, auto"),
    ("trainer.deterministic=maybe", "trainer.deterministic='maybe'", "one of true, false, warn"),
]


@pytest.mark.parametrize("override,named,accepted", BAD_VALUES)
def test_bad_value_names_key_and_accepted_values(override, named, accepted):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_config(override))
    message = str(error.value)
    assert named in message and accepted in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "overrides,named,accepted",
    [
        (["optim=sgd", "optim.momentum=-1"], "optim.momentum=-1", "finite number >= 0"),
        (["optim=sgd", "+optim.dampening=2"], "optim.dampening=2", "finite number in [0, 1]"),
        (
            ["optim=sgd", "optim.nesterov=true", "optim.momentum=0"],
            "optim.nesterov=True",
            "optim.momentum > 0",
        ),
        (["optim=sgd", "optim.nesterov=yes"], "optim.nesterov='yes'", "true or false"),
        (["optim=rmsprop", "optim.alpha=-1"], "optim.alpha=-1", "finite number >= 0"),
        (["optim=rmsprop", "optim.momentum=inf"], "optim.momentum=inf", "finite number >= 0"),
        (["optim=adam", "+optim.eps=-1e-8"], "optim.eps=-1e-08", "finite number >= 0"),
        (
            ["optim=adam", "+optim.momentum=0.9"],
            "optim.momentum=0.9",
            "not an argument of optim (torch.optim.adam.Adam); it takes lr, betas",
        ),
        (["optim._target_=torch.optim.Adamm"], "optim._target_='torch.optim.Adamm'", "an importable class"),
        (
            ["optim._target_=torch.nn.Linear"],
            "optim._target_='torch.nn.Linear'",
            "a torch.optim.Optimizer class",
        ),
        (["optim._partial_=false"], "optim._partial_=False", "true"),
        (
            ["model=lstm", "diagnostics.probe_route=adjoint", "trainer.precision=bf16-mixed"],
            "diagnostics.probe_route='adjoint'",
            "with trainer.precision=bf16-mixed",
        ),
        (
            ["model=lstm", "+model.nonlinearity=relu"],
            "model.nonlinearity='relu'",
            "null unless model.cell=rnn",
        ),
        (
            ["model=gru", "model.init.forget_bias=1.0"],
            "model.init.forget_bias=1.0",
            "null unless model.cell=lstm",
        ),
        (["+modle=gru"], "modle='gru'", "did you mean model?"),
        (["optim=adam", "+optim.amsgrd=true"], "optim.amsgrd=True", "did you mean optim.amsgrad?"),
        (["+model.residuals=true"], "model.residuals=True", "did you mean model.residual?"),
        (["+model.init.gain=2"], "model.init.gain=2", "no such key in model.cell=lstm"),
        (["+task.seq_lenn=10"], "task.seq_lenn=10", "did you mean task.seq_len?"),
        (
            ["+diagnostics.every_n_step=5"],
            "diagnostics.every_n_step=5",
            "did you mean diagnostics.every_n_steps?",
        ),
        (["+trainer.max_step=5"], "trainer.max_step=5", "did you mean trainer.max_steps?"),
        (["+trainer.callbacks=[]"], "trainer.callbacks", "set by rnnflow from the callbacks group"),
        (["+callbacks.spectral.every_n_step=5"], "callbacks.spectral.every_n_step=5", "did you mean"),
        (
            ["+trainer.gradient_clip_val=0.5", "clip.max_norm=1.0"],
            "trainer.gradient_clip_val=0.5 and clip.max_norm=1.0",
            "expected only clip.max_norm",
        ),
        (
            ["+trainer.gradient_clip_val=0.5", "tbptt.chunk=5"],
            "trainer.gradient_clip_val=0.5 with tbptt.chunk=5",
            "expected clip.max_norm=0.5",
        ),
        (
            ["model=rnn", "diagnostics.lyapunov_count=65"],
            "diagnostics.lyapunov_count=65",
            "state dimension 64",
        ),
        (["diagnostics.gates=1"], "diagnostics.gates=1", "true or false"),
        (["diagnostics.saturation_threshold=inf"], "diagnostics.saturation_threshold=inf", "(0, 1)"),
        (
            ["+trainer.gradient_clip_algorithm=median"],
            "trainer.gradient_clip_algorithm='median'",
            "norm, value",
        ),
    ],
)
def test_refused_in_one_line(overrides, named, accepted):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_config(*overrides))
    message = str(error.value)
    assert named in message and accepted in message, message
    assert "\n" not in message


def test_lightning_gradient_clip_val_is_accepted_where_lightning_clips():
    """Honoured by Lightning (ClipMonitor logs clip/*: tests/test_diagnostics_logging.py); kept as given."""
    for overrides in (
        ["+trainer.gradient_clip_val=0.5"],
        ["+trainer.gradient_clip_val=0.5", "+trainer.gradient_clip_algorithm=value"],
        ["+trainer.gradient_clip_val=0", "clip.max_norm=1.0"],  # Lightning: 0 = no clipping
        ["+trainer.gradient_clip_val=null", "clip.max_norm=2"],
    ):
        cfg = compose_config(*overrides)
        validate_config(cfg)
        assert cfg.trainer.gradient_clip_val == compose_config(*overrides).trainer.gradient_clip_val


def test_precisions_that_run_are_accepted():
    for precision in ("32-true", "16-mixed", "bf16-mixed", "32", "bf16", "16"):
        validate_config(compose_config(f"trainer.precision={precision}"))


def test_lightning_trainer_arguments_may_be_added():
    validate_config(compose_config("+trainer.limit_val_batches=2", "+trainer.max_time=00:00:10:00"))


def test_every_declared_key_is_in_the_default_configs_and_readme():
    """The schema, conf/ and README's config reference list the same keys."""
    from rnnflow.config.schema import KEYS

    readme = (ROOT / "README.md").read_text()
    composed = [compose_config(f"model={cell}") for cell in ("rnn", "lstm", "gru")]
    composed.append(compose_config("trainer=ddp"))
    for key in KEYS:
        present = [
            cfg for cfg in composed if OmegaConf.select(cfg, key.path, default=KeyError) is not KeyError
        ]
        optional = key.path.startswith("trainer.gradient_clip")
        assert present or optional, f"{key.path} is declared but no default config has it"
        assert f"`{key.path}`" in readme or f"`{key.path.split('.')[-1]}`" in readme, (
            f"{key.path} not in README"
        )


def test_rnn_nonlinearity():
    with pytest.raises(
        ConfigError, match=r"model.nonlinearity='softplus': expected one of tanh, relu, sigmoid"
    ):
        validate_config(compose_config("model=rnn", "model.nonlinearity=softplus"))


def test_inconsistent_init():
    with pytest.raises(ConfigError, match="model.init.spectral_radius"):
        validate_config(compose_config("model.init.recurrent=zeros", "model.init.spectral_radius=1.0"))
    with pytest.raises(ConfigError, match="model.init.forget_bias.*unless model.cell=lstm"):
        validate_config(compose_config("model=gru", "model.init.forget_bias=1.0"))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_adjoint_route_is_accepted_for_every_cell(cell):
    validate_config(compose_config(f"model={cell}", "diagnostics.probe_route=adjoint"))


def test_default_config_is_valid():
    for model in ("rnn", "lstm", "gru"):
        for task in ("adding", "copy"):
            validate_config(compose_config(f"model={model}", f"task={task}"))


@pytest.mark.parametrize("override,group", [("model=transformer", "model"), ("task=sorting", "task")])
def test_unknown_group_option_lists_the_options(override, group):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as error:
        compose_config(override)
    message = str(error.value)
    assert f"Could not find '{group}/" in message
    assert "Available options" in message and ("lstm" in message or "adding" in message)


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigCompositionException, match="hiden_size"):
        compose_config("model.hiden_size=3")


def test_cli_fails_with_one_line_and_writes_nothing(tmp_path, python):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [python, "scripts/train.py", "model.hidden_size=0", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rnnflow: invalid config: model.hidden_size=0: expected an integer >= 1"
    ]
    assert not run_dir.exists()  # not even Hydra's .hydra/ and train.log


def _cli(tmp_path, python, *overrides, cwd=None):
    """Run scripts/train.py from ``cwd`` (default: an empty dir in tmp_path); (result, new entries there)."""
    cwd = cwd or tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    result = subprocess.run(
        [python, str(ROOT / "scripts" / "train.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, sorted(p.relative_to(cwd).as_posix() for p in cwd.rglob("*"))


@pytest.mark.parametrize(
    "override,line",
    [
        ("modle=gru", "rnnflow: invalid config: modle=gru: no such key; did you mean model?"),
        (
            "model=null",
            "rnnflow: invalid config: model=null: a config group takes one of its options"
            " (model has gru, lstm, rnn); to use none, leave model out",
        ),
        (
            "experiment=spectral",
            "rnnflow: invalid config: experiment=spectral: no such option; experiment has"
            " cells_vs_length, clipping, depth, depth_table, init, nonlinearity, spectral_radius, truncation;"
            " did you mean experiment=spectral_radius?",
        ),
        (
            "task.seq_lenn=10",
            "rnnflow: invalid config: task.seq_lenn=10: no such key; did you mean task.seq_len?",
        ),
    ],
)
def test_cli_typo_names_the_closest_key_and_leaves_nothing(tmp_path, python, override, line):
    result, left = _cli(tmp_path, python, override)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]  # not Hydra's "use +key" advice
    assert left == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["model.init.recurrrent=normal"], "did you mean model.init.recurrent?"),
        (["-m", "model=rnn,gru", "optim.betaz=[0.9,0.99]"], "did you mean optim.betas?"),
        (["optim=sgd", "optim.momentun=0.5"], "did you mean optim.momentum?"),
        (["trainer.limit_val_batches=2"], "add it with +trainer.limit_val_batches=2"),
        (["diagnostics.zzz=1"], "no such key; diagnostics has every_n_steps"),
        (["task=addng"], "task=addng: no such option; task has adding, copy, multiplication"),
        (["task=addng"], "; did you mean task=adding?"),
        (["model=transformer"], "model=transformer: no such option; model has gru, lstm, rnn"),
        (["-m", "model=rnn,transformer"], "model=transformer: no such option"),  # every value of a sweep
        (["experiment=depth_table", "depth_scheme=relu"], "depth_scheme has relu_he, sigmoid_normal"),
        (["model=null"], "model=null: a config group takes one of its options (model has gru, lstm, rnn)"),
        (["experiment=null"], "to use none, leave experiment out"),
        (
            ["hydra/launcher=nope"],
            "hydra/launcher=nope: no such option; hydra/launcher has basic",
        ),  # Hydra's list
        (
            ["depth_scheme=relu_he"],
            "the config group depth_scheme is not in this config's defaults"
            " (experiment=depth_table uses it); add it with +depth_scheme=relu_he",
        ),
    ],
)
def test_command_line_typos(argv, message):
    from rnnflow.config.command_line import check_command_line

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_command_line(argv, ROOT / "conf", "train")


def test_command_line_check_lets_good_and_non_key_errors_through():
    from rnnflow.config.command_line import check_command_line

    for argv in (
        [],
        ["model=gru", "task.seq_len=10"],
        ["-m", "model=rnn,lstm", "task.seq_len=10,20", "optim.lr=range(1,3)"],
        ["+trainer.limit_val_batches=2"],
        ["experiment=depth_table", "depth_scheme=relu_he"],
        ["hydra/launcher=basic"],  # Hydra's own groups (options from plugins too) are Hydra's to check
        ["--cfg", "job", "modle=gru"],  # a Hydra flag: Hydra handles the command
    ):
        check_command_line(argv, ROOT / "conf", "train")


def test_cli_rejected_config_leaves_no_run_dir(tmp_path, python):
    """Hydra writes .hydra/ and train.log before the task function; a refused run removes them."""
    result, left = _cli(tmp_path, python, "model.residual=banana")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rnnflow: invalid config: model.residual='banana': expected true or false"
    ]
    assert left == []


def test_rejected_run_dir_keeps_what_it_did_not_create(tmp_path, python):
    run_dir = tmp_path / "existing"
    (run_dir / "tb").mkdir(parents=True)
    result, _ = _cli(tmp_path, python, "model.layer_norm=2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "model.layer_norm=2: expected true or false" in result.stderr
    assert (run_dir / "tb").is_dir() and (run_dir / ".hydra").is_dir()  # not only Hydra's: all kept


def test_remove_rejected_run_dir_only_removes_this_launchs_files(tmp_path):
    from rnnflow.runtime.rejected import remove_rejected_run_dir

    run_dir = tmp_path / "logs" / "runs" / "r"
    (run_dir / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).write_text("{}")
    (run_dir / "train.log").write_text("")
    old = time.time() - 3600
    os.utime(run_dir / ".hydra" / "config.yaml", (old, old))
    assert not remove_rejected_run_dir(run_dir, since=time.time())  # written by an earlier launch
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    (run_dir / ".hydra" / "config.yaml").touch()
    (run_dir / ".hydra" / "extra.txt").write_text("x")
    assert not remove_rejected_run_dir(run_dir, since=time.time() - 10)
    (run_dir / ".hydra" / "extra.txt").unlink()
    (tmp_path / "logs" / "keep").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert remove_rejected_run_dir(run_dir, since=time.time() - 10)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "logs" / "runs").exists() and (tmp_path / "logs" / "keep").is_dir()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_gpu_trainer_without_gpu(tmp_path, python):
    result, left = _cli(tmp_path, python, "trainer=gpu")
    assert result.returncode == 2 and left == []
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rnnflow: invalid config: trainer.accelerator='gpu': torch sees no CUDA GPU")
    assert "use trainer=cpu" in line


def test_gpu_count_checked():
    from rnnflow.runtime.devices import check_accelerator

    with pytest.raises(ConfigError, match="torch sees no CUDA GPU.*use trainer=cpu"):
        check_accelerator(compose_config("trainer=gpu"), gpu_count=0)
    with pytest.raises(ConfigError, match=r"trainer.devices=4: this machine has 2 GPUs"):
        check_accelerator(compose_config("trainer=gpu", "trainer.devices=4"), gpu_count=2)
    with pytest.raises(ConfigError, match=r"trainer.devices=\[0, 3\]: this machine has 2 GPUs"):
        check_accelerator(compose_config("trainer=gpu", "trainer.devices=[0,3]"), gpu_count=2)
    check_accelerator(compose_config("trainer=gpu", "trainer.devices=2"), gpu_count=2)
    check_accelerator(compose_config("trainer=ddp"), gpu_count=0)  # accelerator auto: CPU processes


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["model.init.forget_bias=warp"],
            "model.init.forget_bias='warp': expected a finite number, chrono or null",
        ),
        (
            ["model.init.forget_bias=chrono", "model.init.chrono_max=2"],
            "model.init.chrono_max=2: expected a finite number > 2",
        ),
        (
            ["model.init.forget_bias=chrono", "task.seq_len=2"],
            "task.seq_len=2: expected > 2 for forget_bias=chrono",
        ),
    ],
)
def test_chrono_init_values(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(compose_config("model=lstm", *overrides))
    validate_config(compose_config("model=lstm", "model.init.forget_bias=chrono"))
