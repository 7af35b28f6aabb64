"""Devices, sweeps, failures, interrupts and resume.

Launch checks and GPU pinning with faked device counts; the SLURM launcher config; a parallel
sweep with one failing job; SIGTERM (subprocess) and Ctrl-C (in-process) then an exact resume;
non-finite counters and weights_only checkpoints; resume into the same run dir or a branch.
Slow: ddp_spawn in-process and plain ddp through the script on 2 CPU processes. GPU: marked.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, TINY, compose_config, read_scalars
from hydra import compose, initialize_config_dir
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf, open_dict

from rnnflow.config import ConfigError
from rnnflow.runtime.devices import check_launch, device_count, gpu_for_job, gpus_for_job, pin_job_to_gpu
from rnnflow.runtime.interrupt import interrupt_exit_status
from rnnflow.runtime.resume_dir import experiment_overrides, resume_run_dir
from rnnflow.runtime.sweep import SweepLaunchCheck, failed_jobs, record_failure

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.fixture(autouse=True)
def fresh_master_port():
    """Lightning leaves MASTER_PORT in os.environ after a ddp_spawn run: every run picks a free port."""
    os.environ.pop("MASTER_PORT", None)
    yield
    os.environ.pop("MASTER_PORT", None)


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# --- GPU assignment of sweep jobs (faked device counts) ---------------------------------------


def test_gpus_for_job_round_robin_over_groups():
    assert [gpu_for_job(n, 4) for n in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert [gpu_for_job(n, 1) for n in range(3)] == [0, 0, 0]
    assert [gpus_for_job(n, 4, 2) for n in range(3)] == [[0, 1], [2, 3], [0, 1]]
    assert [gpus_for_job(n, 8, 3) for n in range(3)] == [[0, 1, 2], [3, 4, 5], [0, 1, 2]]
    assert gpus_for_job(5, 3, 2) == [0, 1]  # one group of two fits on three GPUs
    for args in [(0, 0), (0, 2, 3), (0, 2, 0)]:
        with pytest.raises(ValueError):
            gpus_for_job(*args)


@pytest.mark.parametrize(
    "overrides,gpus,job,expected",
    [
        (["trainer=gpu"], 4, 6, [2]),
        (["trainer=gpu"], 1, 6, 1),  # one GPU: nothing to spread
        (["trainer=cpu"], 4, 6, 1),
        (["trainer=ddp_spawn"], 4, 3, [2, 3]),  # two GPUs per job: groups {0,1} and {2,3}
        (["trainer=ddp_spawn"], 3, 3, 2),  # only one group fits: Lightning picks the GPUs
        (["trainer=gpu", "trainer.devices=[1]"], 4, 6, [1]),  # explicit indices are kept
        (["trainer=gpu", "trainer.devices=-1"], 4, 6, -1),
    ],
)
def test_pin_job_to_gpu_with_faked_device_counts(overrides, gpus, job, expected):
    cfg = compose_config(*overrides)
    pin_job_to_gpu(cfg, job, gpus, cluster_managed=False)
    assert OmegaConf.to_container(cfg.trainer)["devices"] == expected


def test_a_cluster_assigns_its_own_devices():
    cfg = compose_config("trainer=gpu")
    assert pin_job_to_gpu(cfg, 3, 4, cluster_managed=True) is None
    assert cfg.trainer.devices == 1


def test_device_count_of_trainer_devices():
    assert [device_count(d) for d in (1, 4, [0, 2], "3", "0,1", -1, "auto")] == [1, 4, 2, 3, 2, None, None]


# --- plain ddp in a sweep ---------------------------------------------------------------------


def test_plain_ddp_is_refused_in_a_sweep_only():
    cfg = compose_config("trainer=ddp")
    check_launch(cfg, multirun=False)
    with pytest.raises(ConfigError, match=r"trainer.strategy='ddp' with trainer.devices=2: expected"):
        check_launch(cfg, multirun=True, cluster_managed=False)
    check_launch(cfg, multirun=True, cluster_managed=True)  # SLURM/torchrun start the ranks
    check_launch(compose_config("trainer=ddp", "trainer.devices=1"), multirun=True, cluster_managed=False)
    check_launch(compose_config("trainer=ddp_spawn"), multirun=True, cluster_managed=False)


def test_a_plain_ddp_sweep_is_refused_before_its_first_job(capsys):
    check = SweepLaunchCheck()
    with pytest.raises(SystemExit) as stop:
        check.on_multirun_start(compose_with_hydra("trainer=ddp", "trainer.accelerator=cpu"))
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "trainer.strategy='ddp'" in line and "trainer.devices=2" in line and "ddp_spawn" in line
    check.on_multirun_start(compose_with_hydra("trainer=ddp_spawn"))
    check.on_multirun_start(compose_with_hydra("trainer=ddp", "trainer.devices=1"))
    # the composed hydra config registers the check and the failure summary
    callbacks = compose_with_hydra().hydra.callbacks
    assert {c._target_.rsplit(".", 1)[1] for c in callbacks.values()} >= {
        "SweepLaunchCheck",
        "SweepFailureSummary",
    }


# --- launchers --------------------------------------------------------------------------------


def test_slurm_launcher_config_matches_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"
    )
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == 4 == launcher.gpus_per_node == cfg.trainer.devices
    assert launcher.nodes == 2
    assert "SlurmLauncher" in launcher._target_
    SweepLaunchCheck().on_multirun_start(cfg)  # SLURM starts the ranks: plain ddp is right there


def test_parallel_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    launcher = compose_with_hydra("hydra/launcher=parallel").hydra.launcher
    assert "JoblibLauncher" in launcher._target_ and launcher.n_jobs == -1


# --- run dirs ---------------------------------------------------------------------------------


def test_run_and_sweep_dirs_are_unique_below_the_second():
    first, second = compose_with_hydra(), compose_with_hydra()
    for key in ("run", "sweep"):
        raw = OmegaConf.to_container(first.hydra, resolve=False)[key]["dir"]
        assert raw.endswith("%H-%M-%S-%f}"), raw  # microseconds in the name
        a, b = first.hydra[key].dir, second.hydra[key].dir
        assert a != b and len(a) == len(b)


def test_long_sweep_job_names_are_shortened_and_unique():
    from rnnflow.runtime.resolvers import short_dirname

    long_a, long_b = "a=1," + "x" * 300, "a=2," + "x" * 300
    assert short_dirname("a=1,b=2") == "a=1,b=2"
    assert len(short_dirname(long_a)) == 120 and short_dirname(long_a) != short_dirname(long_b)


# --- failures in a sweep ----------------------------------------------------------------------


def test_failure_records(tmp_path):
    record_failure(tmp_path / "0_a=1", "Traceback ...\nValueError: boom\n")
    (tmp_path / "1_a=2").mkdir()
    assert failed_jobs(tmp_path) == [("0_a=1", "ValueError: boom")]


def test_parallel_sweep_of_three_jobs_with_one_failing(tmp_path):
    """Job 1 (N(0, 30²) recurrent weights) explodes under nonfinite.policy=raise; 0 and 2 finish."""
    sweep = tmp_path / "sweep"
    result = run_script(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        *TINY,
        "model=rnn",
        "model.nonlinearity=relu",
        "model.init.recurrent=normal",
        "model.init.std=0.1,30,0.2",
        "nonfinite.policy=raise",
        "trainer.max_steps=5",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [job.split("_", 1)[0] for job in jobs] == ["0", "1", "2"]
    failures = failed_jobs(sweep)
    assert [job for job, _ in failures] == [jobs[1]]
    assert "FloatingPointError" in failures[0][1]
    assert "1 sweep job(s) failed" in result.stderr and jobs[1] in result.stderr
    assert "Traceback" in (sweep / jobs[1] / "failure.txt").read_text()
    for job in (jobs[0], jobs[2]):
        assert (sweep / job / "checkpoints" / "last.ckpt").exists()
        assert len(read_scalars(sweep / job)["train/loss"]) == 5


# --- interrupts and resume --------------------------------------------------------------------


def test_sigterm_saves_a_checkpoint_and_resume_continues_exactly(tmp_path, train_run):
    run_dir = tmp_path / "run"
    no_val = "trainer.val_check_interval=100000"
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/train.py",
            *TINY,
            "trainer.max_steps=100000",
            no_val,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    events = run_dir / "tb"
    while time.monotonic() < deadline and not (events.exists() and any(events.glob("events.*"))):
        time.sleep(0.2)
    time.sleep(1.5)  # some training steps
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert f"resume with ckpt_path={checkpoint}" in stderr
    assert "Traceback" not in stderr
    stopped_at = torch.load(checkpoint, weights_only=True)["global_step"]
    assert stopped_at > 0
    end = stopped_at + 3
    # Hydra's own dir of the resuming command (its .hydra record) goes to tmp, not to the repo's logs/.
    resumed = run_script(
        *TINY,
        f"trainer.max_steps={end}",
        no_val,
        f"ckpt_path={checkpoint}",
        f"hydra.run.dir={tmp_path / 'resume'}",
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(list(events.glob("events.*"))) == 2  # the same TensorBoard run, a second event file
    continued = read_scalars(run_dir)["train/loss"]
    _, uninterrupted = train_run(f"trainer.max_steps={end}", no_val, name="uninterrupted")
    assert continued == read_scalars(uninterrupted)["train/loss"]
    assert [s for s, _ in continued] == list(range(end))


class SignalAtBatch(L.Callback):
    """Test helper: send ``signum`` to this process at the end of batch ``batch``."""

    def __init__(self, batch: int, signum: int) -> None:
        self.batch, self.signum = batch, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            signal.raise_signal(self.signum)


def train_with(tmp_path: Path, name: str, *overrides: str, signal_at: int | None = None):
    """Train in-process with ``overrides`` into ``tmp_path/name``; Ctrl-C at batch ``signal_at``."""
    from rnnflow.runtime.run import train

    out = tmp_path / name
    cfg = compose_config(*TINY, *overrides, output_dir=out)
    if signal_at is not None:
        with open_dict(cfg):
            cfg.callbacks.signal = {
                "_target_": f"{__name__}.SignalAtBatch",
                "batch": signal_at,
                "signum": int(signal.SIGINT),
            }
    return train(cfg), out


CLIPPED = ["clip.max_norm=0.05", "diagnostics.every_n_steps=3", "trainer.val_check_interval=4"]


def test_interrupt_callback_runs_after_the_others_and_before_the_checkpoint(tmp_path):
    # A signal raised in any callback's on_train_batch_end stops the run at the end of that batch,
    # and the checkpoint callback saves after the interrupt callback asked for it.
    from rnnflow.runtime.build import build_trainer
    from rnnflow.runtime.checkpoint import RunCheckpoint
    from rnnflow.runtime.interrupt import InterruptCheckpoint

    trainer = build_trainer(compose_config(*TINY, output_dir=tmp_path))
    kinds = [type(c) for c in trainer.callbacks]
    assert kinds[-2:] == [InterruptCheckpoint, RunCheckpoint]


def test_ctrl_c_stops_before_the_next_batch_and_resume_is_exact(tmp_path):
    with pytest.raises(SIGTERMException) as stop:
        train_with(tmp_path, "run", *CLIPPED, "trainer.max_steps=10", signal_at=4)
    assert stop.value.code == 130 == interrupt_exit_status(stop.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)  # plain types only
    assert state["global_step"] == 5  # batches 0..4 done
    clip_state = next(v for k, v in state["callbacks"].items() if k.startswith("ClipMonitor"))
    assert clip_state == {"events": 5, "steps": 5}
    train_with(tmp_path, "resumed", *CLIPPED, "trainer.max_steps=10", f"ckpt_path={checkpoint}")
    assert not (tmp_path / "resumed").exists()  # written into the interrupted run's dir
    _, full = train_with(tmp_path, "full", *CLIPPED, "trainer.max_steps=10")
    continued, uninterrupted = read_scalars(tmp_path / "run"), read_scalars(full)
    for tag in ("train/loss", "clip/pre_norm", "clip/events", "grad_flow/layer0/log10_ratio"):
        assert continued[tag] == uninterrupted[tag], tag
    assert continued["clip/events"][-1] == (9, 10.0)


class PoisonGradients(L.Callback):
    """Test helper: make the gradient of batches ``batches`` non-finite (the loss stays finite)."""

    def __init__(self, batches: list[int]) -> None:
        self.batches = set(batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = batch_idx

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.batch in self.batches:
            next(pl_module.parameters()).grad.fill_(math.nan)


def train_poisoned(tmp_path: Path, name: str, batches: list[int], *overrides: str):
    from rnnflow.runtime.run import train

    cfg = compose_config(*TINY, *overrides, output_dir=tmp_path / name)
    with open_dict(cfg):
        cfg.callbacks.poison = {"_target_": f"{__name__}.PoisonGradients", "batches": batches}
    return train(cfg)


def guard_state(checkpoint: dict) -> dict:
    """The NonFiniteGuard callback's state in a checkpoint."""
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("NonFiniteGuard")]
    return state


def test_nonfinite_counters_survive_a_resume(tmp_path):
    """Steps with a non-finite gradient are skipped; the run stops at 3 in a row, counted across a resume."""
    few = ["nonfinite.max_consecutive=3"]
    train_poisoned(tmp_path, "run", [1], *few, "trainer.max_steps=2")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert guard_state(state) == {"events": 1, "consecutive": 1}
    assert state["global_step"] == 2  # the state after a skipped step with a finite loss is good
    train_poisoned(tmp_path, "resumed", [2, 3, 4, 5], *few, "trainer.max_steps=20", f"ckpt_path={checkpoint}")
    state = torch.load(checkpoint, weights_only=True)
    assert guard_state(state) == {"events": 3, "consecutive": 3}
    assert state["global_step"] == 4  # stopped after the third non-finite step in a row
    assert [v for _, v in read_scalars(tmp_path / "run")["nonfinite/events"]] == [0.0, 1.0, 2.0, 3.0]


def fake_run(tmp_path: Path, overrides: list[str]) -> Path:
    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(b"")
    return checkpoint


def test_resume_writes_into_the_run_dir_unless_it_branches(tmp_path):
    checkpoint = fake_run(tmp_path, ["model=gru", "optim.lr=0.01", "trainer.max_steps=100"])
    run = checkpoint.parent.parent
    assert resume_run_dir(str(checkpoint)) == run
    same = ["optim.lr=0.01", "model=gru", "trainer.max_steps=400", f"ckpt_path={checkpoint}", "trainer=gpu"]
    assert resume_run_dir(str(checkpoint), same) == run
    assert resume_run_dir(str(checkpoint), [*same, "diagnostics.every_n_steps=5"]) == run
    assert resume_run_dir(str(checkpoint), ["model=gru", "optim.lr=0.001"]) is None  # a branch
    assert resume_run_dir(str(checkpoint), ["optim.lr=0.01"]) is None  # model=gru forgotten
    assert experiment_overrides(["+clip.max_norm=1", "hydra/launcher=parallel", "seed=2"]) == {
        "clip.max_norm=1",
        "seed=2",
    }
    elsewhere = tmp_path / "last.ckpt"
    elsewhere.write_bytes(b"")
    assert resume_run_dir(str(elsewhere)) is None
    with pytest.raises(ConfigError, match="ckpt_path="):
        resume_run_dir(str(tmp_path / "missing.ckpt"))


# --- several processes (slow) and GPUs --------------------------------------------------------


@pytest.mark.slow
def test_ddp_spawn_on_two_cpu_processes(train_run):
    metrics, out = train_run(
        "trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=4"
    )
    tags = read_scalars(out)  # rank 0 alone writes TensorBoard
    assert len(list((out / "tb").glob("events.*"))) == 1
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2, 3]
    assert "grad_flow/layer0/log10_ratio" in tags and "clip/pre_norm" in tags
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


@pytest.mark.slow
def test_plain_ddp_on_two_cpu_processes_through_the_script(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=4",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tags = read_scalars(run_dir)
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2, 3]
    assert len(list((run_dir / "tb").glob("events.*"))) == 1


@pytest.mark.slow
def test_sigterm_to_plain_ddp_then_resume_with_ddp(tmp_path):
    """SIGTERM to rank 0 of a 2-process ddp run: both ranks stop at the same batch and save."""
    run_dir, full_dir = tmp_path / "run", tmp_path / "full"
    ddp = [
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.val_check_interval=1000",
    ]
    process = subprocess.Popen(
        [sys.executable, "scripts/train.py", *ddp, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any((run_dir / "tb").glob("events.*")):
        time.sleep(0.2)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    end = torch.load(checkpoint, weights_only=True)["global_step"] + 2
    resumed = run_script(
        *ddp, f"trainer.max_steps={end}", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'resume'}"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = run_script(*ddp, f"trainer.max_steps={end}", f"hydra.run.dir={full_dir}")
    assert full.returncode == 0, full.stderr[-3000:]
    continued = read_scalars(run_dir)["train/loss"]
    assert [s for s, _ in continued] == list(range(end))
    assert continued == read_scalars(full_dir)["train/loss"]


@pytest.mark.slow
def test_ctrl_c_in_a_ddp_spawn_worker_then_resume(tmp_path):
    from torch.multiprocessing.spawn import ProcessExitedException

    spawn = ["trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=8"]
    with pytest.raises(ProcessExitedException) as stop:  # the workers exit with 130; the parent sees it
        train_with(tmp_path, "run", *spawn, signal_at=3)
    assert interrupt_exit_status(stop.value) == 130
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 4
    train_with(tmp_path, "resumed", *spawn, f"ckpt_path={checkpoint}")
    _, full = train_with(tmp_path, "full", *spawn)
    assert read_scalars(tmp_path / "run")["train/loss"] == read_scalars(full)["train/loss"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_gpu_run(train_run, precision):
    metrics, out = train_run("trainer=gpu", f"trainer.precision={precision}", "trainer.max_steps=6")
    tags = read_scalars(out)
    assert len(tags["train/loss"]) == 6 and "grad_flow/layer0/log10_ratio" in tags
    assert all(torch.isfinite(torch.tensor(v)) for _, v in tags["grad_flow/layer0/log10_ratio"])


@pytest.mark.gpu
@needs_gpu
def test_plain_ddp_on_one_gpu_through_the_script(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        *TINY, "trainer=ddp", "trainer.devices=1", "trainer.max_steps=4", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s for s, _ in read_scalars(run_dir)["train/loss"]] == [0, 1, 2, 3]
