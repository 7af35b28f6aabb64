"""Launch checks, GPU pinning with faked device counts, sweeps with a failing job, SIGTERM and resume."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch
from conftest import ROOT, TINY, compose_config, read_scalars
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rnnflow.config import ConfigError
from rnnflow.training.devices import check_launch, gpu_for_job, pin_job_to_gpu
from rnnflow.training.sweep import failed_jobs, record_failure


def test_gpu_for_job_round_robin():
    assert [gpu_for_job(n, 4) for n in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert [gpu_for_job(n, 1) for n in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError):
        gpu_for_job(0, 0)


@pytest.mark.parametrize(
    "trainer,gpus,job,expected",
    [("gpu", 4, 6, [2]), ("gpu", 1, 6, 1), ("cpu", 4, 6, 1), ("ddp_spawn", 4, 6, 2)],
)
def test_pin_job_to_gpu_with_faked_device_counts(trainer, gpus, job, expected):
    cfg = compose_config(f"trainer={trainer}")
    pin_job_to_gpu(cfg, job, gpus)
    assert OmegaConf.to_container(cfg.trainer)["devices"] == expected


def test_plain_ddp_is_refused_in_a_sweep_only():
    cfg = compose_config("trainer=ddp")
    check_launch(cfg, multirun=False)
    with pytest.raises(ConfigError, match="trainer.strategy='ddp': expected ddp_spawn"):
        check_launch(cfg, multirun=True)
    check_launch(compose_config("trainer=ddp_spawn"), multirun=True)


def test_slurm_launcher_config_matches_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == 4 == launcher.gpus_per_node
    assert launcher.nodes == 2
    assert "SlurmLauncher" in launcher._target_


def test_failure_records(tmp_path):
    record_failure(tmp_path / "0_a=1", "Traceback ...\nValueError: boom\n")
    (tmp_path / "1_a=2").mkdir()
    assert failed_jobs(tmp_path) == [("0_a=1", "ValueError: boom")]


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [__import__("sys").executable, "scripts/train.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sweep_of_three_jobs_with_one_failing(tmp_path):
    """Job 1 (N(0, 30²) recurrent weights) explodes under nonfinite.policy=raise; 0 and 2 finish."""
    sweep = tmp_path / "sweep"
    result = run_script(
        "-m",
        *TINY,
        "model=rnn",
        "model.nonlinearity=relu",
        "model.init.recurrent=normal",
        "model.init.std=0.1,30,0.2",
        "nonfinite.policy=raise",
        "trainer.max_steps=5",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    failures = failed_jobs(sweep)
    assert [job for job, _ in failures] == [jobs[1]]
    assert "FloatingPointError" in failures[0][1]
    assert "1 sweep job(s) failed" in result.stderr and jobs[1] in result.stderr
    for job in (jobs[0], jobs[2]):
        assert (sweep / job / "checkpoints" / "last.ckpt").exists()


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "trainer.max_steps=100000",
        "trainer.val_check_interval=100000",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.Popen(
        [__import__("sys").executable, "scripts/train.py", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    events = run_dir / "tb"
    while time.monotonic() < deadline and not (events.exists() and any(events.glob("events.*"))):
        time.sleep(0.5)
    time.sleep(3)  # some training steps
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.exists(), stderr[-2000:]
    assert "resume with ckpt_path=" in stderr
    stopped_at = torch.load(checkpoint, weights_only=True)["global_step"]
    assert stopped_at > 0
    resumed = run_script(*TINY, f"trainer.max_steps={stopped_at + 3}", f"ckpt_path={checkpoint}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [s for s, _ in read_scalars(run_dir)["train/loss"]]  # the same TensorBoard run
    assert steps == list(range(stopped_at + 3))


@pytest.mark.slow
def test_ddp_spawn_on_two_cpu_processes(train_run):
    metrics, out = train_run(
        "trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=4"
    )
    tags = read_scalars(out)  # rank 0 alone writes TensorBoard
    assert [s for s, _ in tags["train/loss"]] == [0, 1, 2, 3]
    assert "grad_flow/layer0/log10_ratio" in tags
    assert (out / "checkpoints" / "last.ckpt").exists()


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


def test_run_and_sweep_dirs_are_unique_within_a_second():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        first = compose("train", return_hydra_config=True)
        second = compose("train", return_hydra_config=True)
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        a, b = OmegaConf.select(first, key), OmegaConf.select(second, key)
        assert a != b and a[:-7] == b[:-7] or a[:-9] == b[:-9]  # same second, different microseconds


def test_long_sweep_job_names_are_shortened_and_unique():
    from rnnflow.resolvers import short_dirname

    long_a, long_b = "a=1," + "x" * 300, "a=2," + "x" * 300
    assert short_dirname("a=1,b=2") == "a=1,b=2"
    assert len(short_dirname(long_a)) == 120 and short_dirname(long_a) != short_dirname(long_b)
