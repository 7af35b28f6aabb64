"""rnnflow's SLURM path: the request checked before submission, and real jobs on a local cluster.

The tests marked ``slurm`` run real jobs on the one-node cluster of :mod:`tests.slurm_cluster`
(skipped with one line where SLURM cannot start): the README's sweep command (one job with a bad
value fails alone), pre-emption, ``scontrol requeue`` and ``scancel --signal=TERM`` survived by
one job that resumes exactly, and DDP over a job's two tasks against ``ddp_spawn``. The others
check the launcher config and the checks before submission without a cluster.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tbparse import SummaryReader

from rnnflow.config import ConfigError
from rnnflow.runtime.slurm import (
    NodeShape,
    SlurmJob,
    _gres_gpus,
    check_job,
    check_submission,
    requeued_checkpoint,
)
from tests.conftest import ROOT, compose_config
from tests.slurm_cluster import slurm_cluster, start_cluster  # noqa: F401  (the session fixture)

# The README's command on the local cluster: its partition, 1 CPU and 2 GB per job, the CPU trainer.
README_SLURM = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.partition=local",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "trainer=cpu",
]
# Jobs small enough for a loaded 2-core machine (a job is mostly Python start-up).
SMALL = [
    "task.seq_len=10",
    "task.batch_size=8",
    "task.val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]
DIAGNOSTIC_TAGS = ("grad_flow/", "spectral/", "clip/")


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def train_cli(cluster, *args: str, timeout: float = 900, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(cluster.env if cluster is not None else os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "scripts/train.py", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` over every event file below ``path``, in file order."""
    frame = SummaryReader(str(path), pivot=False).scalars.sort_values("step", kind="stable")
    return {tag: list(zip(g.step, g.value, strict=True)) for tag, g in frame.groupby("tag")}


# --- without a cluster: what a job asks for, checked before submission --------------------------


@pytest.mark.parametrize(
    ("overrides", "gpus"),
    [
        (["trainer=cpu"], None),
        (["trainer=default", "trainer.devices=2"], None),
        (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], None),
        (["trainer=gpu"], 1),
        (["trainer=ddp", "trainer.devices=4"], 4),  # accelerator auto: GPUs on a cluster
        (["trainer=ddp_spawn", "trainer.accelerator=cuda", "trainer.devices=[0,1,2]"], 3),
    ],
)
def test_a_job_asks_for_gpus_only_for_a_gpu_trainer(overrides, gpus):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_with_hydra("hydra/launcher=slurm", *overrides).hydra.launcher
    assert launcher.gpus_per_node == gpus
    assert launcher.additional_parameters.requeue is True


SMALL_NODE = [NodeShape(cpus=2, memory_mb=8000, gpus=0)]
GPU_NODES = [NodeShape(cpus=32, memory_mb=256000, gpus=4), NodeShape(cpus=16, memory_mb=128000, gpus=0)]


@pytest.mark.parametrize(
    ("overrides", "nodes", "keys"),
    [
        (["trainer=cpu"], SMALL_NODE, None),  # the defaults: 2 CPUs, 4 GB
        (["trainer=cpu", "hydra.launcher.cpus_per_task=3"], SMALL_NODE, ["hydra.launcher.cpus_per_task=3"]),
        (
            ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
            SMALL_NODE,
            ["cpus_per_task=2", "tasks_per_node=2", "4 CPUs"],
        ),
        (["trainer=cpu", "hydra.launcher.mem_gb=16"], SMALL_NODE, ["hydra.launcher.mem_gb=16", "8000 MB"]),
        (["trainer=gpu"], SMALL_NODE, ["hydra.launcher.gpus_per_node=1", "no GPUs", "trainer.accelerator"]),
        (["trainer=gpu", "trainer.devices=4"], GPU_NODES, None),
        (["trainer=ddp", "trainer.devices=8"], GPU_NODES, ["gpus_per_node=8", "at most 4 GPUs"]),
        (
            ["trainer=ddp", "trainer.devices=2", "hydra.launcher.tasks_per_node=1"],
            GPU_NODES,
            ["hydra.launcher.tasks_per_node=1", "trainer.devices=2"],
        ),
        (
            ["trainer=ddp", "trainer.devices=2", "hydra.launcher.nodes=2"],
            GPU_NODES,
            ["hydra.launcher.nodes=2", "trainer.num_nodes=1"],
        ),
        (["trainer=gpu", "trainer.devices=-1"], GPU_NODES, ["trainer.devices=-1"]),
    ],
)
def test_check_before_submission(overrides, nodes, keys):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    config = compose_with_hydra("hydra/launcher=slurm", *overrides)
    if keys is None:
        check_submission(config, nodes=nodes, name="p")
        return
    with pytest.raises(ConfigError) as error:
        check_submission(config, nodes=nodes, name="p")
    message = str(error.value)
    assert "\n" not in message
    for key in keys:
        assert key in message


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1),shard:8", 4), ("gpu:k80:2,gpu:v100:1", 3), ("", 0)],
)
def test_gpus_in_sinfo_gres(gres, gpus):
    assert _gres_gpus(gres) == gpus


def test_a_task_count_other_than_the_devices_is_refused_inside_the_job():
    cfg = compose_config("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    in_task = {"SLURM_STEP_ID": "0", "SLURM_NTASKS_PER_NODE": "1"}
    with pytest.raises(ConfigError, match=r"tasks_per_node=1 and trainer.devices=2"):
        check_job(cfg, in_task)
    check_job(cfg, {**in_task, "SLURM_NTASKS_PER_NODE": "2"})
    check_job(cfg, {"SLURM_NTASKS_PER_NODE": "1"})  # the batch script itself, not a task: not checked


def test_a_requeued_job_resumes_its_own_checkpoint(tmp_path):
    cfg = compose_config(output_dir=tmp_path)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert requeued_checkpoint(cfg, {"SLURM_RESTART_COUNT": "1"}) is None  # nothing saved yet
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    assert requeued_checkpoint(cfg, {"SLURM_RESTART_COUNT": "2"}) == checkpoint
    assert requeued_checkpoint(cfg, {"SLURM_RESTART_COUNT": "0"}) is None  # the first start
    assert requeued_checkpoint(cfg, {}) is None  # not a SLURM job
    explicit = compose_config("ckpt_path=/elsewhere.ckpt", output_dir=tmp_path)
    assert requeued_checkpoint(explicit, {"SLURM_RESTART_COUNT": "1"}) is None


def test_slurm_job_from_the_environment():
    assert SlurmJob.current({}) is None
    assert SlurmJob.current({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "interactive"}) is None
    job = SlurmJob.current({"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_JOB_NAME": "train"})
    assert job == SlurmJob(job_id="7", rank=1)
    assert signal.SIGUSR2 in job.warning_signals() and signal.SIGUSR1 in job.warning_signals()


def test_without_root_the_cluster_is_not_started_and_says_why_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cluster, reason = start_cluster(tmp_path / "cluster")
    assert cluster is None and "root" in reason and "\n" not in reason
    assert not (tmp_path / "cluster").exists()


# --- on a real one-node cluster ------------------------------------------------------------------


@pytest.mark.slurm
def test_local_cluster_is_up(slurm_cluster):  # noqa: F811
    version = slurm_cluster.version()
    print(f"SLURM: {version}")
    info = slurm_cluster.run("sinfo", "--noheader", "--format=%P|%T|%c").stdout.split("|")
    assert info[0].rstrip("*") == "local" and info[1] == "idle"
    assert int(info[2]) == os.cpu_count()  # this machine's CPUs


@pytest.mark.slurm
def test_readme_sweep_on_slurm_one_failing_job(slurm_cluster, tmp_path):  # noqa: F811
    sweep = tmp_path / "sweep"
    # Four jobs and one with a bad value (hidden size 0), 1 CPU each.
    done = train_cli(
        slurm_cluster,
        *README_SLURM,
        *SMALL,
        "trainer.max_steps=10",
        "trainer.val_check_interval=5",
        "diagnostics.every_n_steps=5",
        "diagnostics.spectral_every_n_steps=5",
        "model.hidden_size=8,12,0,16,24",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "rnnflow: 1 sweep job(s) failed:" in done.stderr
    jobs = sorted(
        (p for p in sweep.iterdir() if p.name[0].isdigit()), key=lambda p: int(p.name.split("_")[0])
    )
    assert len(jobs) == 5 and "model.hidden_size=0" in jobs[2].name
    # The summary names the failed job (its dir) and the reason, in one line.
    assert f"  {jobs[2].name}: rnnflow: invalid config: model.hidden_size=0: expected an integer >= 1" in (
        done.stderr
    )
    finished = [p for p in jobs if p != jobs[2]]
    for job in finished:
        assert not (job / "failure.txt").exists()
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
        tags = scalars(job / "tb")
        assert [s for s, _ in tags["train/loss"]] == list(range(10))
        assert any(t.startswith("grad_flow/") for t in tags)
    assert (jobs[2] / "failure.txt").read_text().strip().endswith("expected an integer >= 1")
    # Scheduled by SLURM: one array task per job, each with its submitit log.
    logs = sorted((sweep / ".submitit").glob("*_*/*_0_log.out"))
    assert len(logs) == 5
    assert (sweep / "multirun.yaml").is_file()  # Hydra's record of the sweep
    report = subprocess.run(
        [sys.executable, "scripts/report.py", str(sweep)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    with open(sweep / "report" / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model.hidden_size"] for row in rows] == ["8", "12", "0", "16", "24"]
    assert [bool(row["val_loss"]) for row in rows] == [
        True,
        True,
        False,
        True,
        True,
    ]  # the failed job: no metrics
    slurm_cluster.wait_for_no_jobs()


@pytest.mark.slurm
def test_a_request_the_cluster_cannot_run_is_refused_before_submission(slurm_cluster, tmp_path):  # noqa: F811
    sweep = tmp_path / "sweep"
    cpus = os.cpu_count() + 1
    known = {job for job, _ in slurm_cluster.jobs()}  # jobs of earlier tests, listed for a while
    done = train_cli(
        slurm_cluster,
        *README_SLURM,
        *SMALL,
        f"hydra.launcher.cpus_per_task={cpus}",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("rnnflow:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"hydra.launcher.cpus_per_task={cpus}" in lines[0] and "partition 'local'" in lines[0]
    assert not (sweep / ".submitit").exists()
    assert {job for job, _ in slurm_cluster.jobs()} <= known  # nothing submitted


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        (["trainer=gpu"], ["hydra.launcher.gpus_per_node=1", "partition 'local' has no GPUs"]),
        (["trainer=cpu", "hydra.launcher.mem_gb=100000"], ["hydra.launcher.mem_gb=100000", "'local'"]),
        (["hydra.launcher.partition=gpu"], ["hydra.launcher.partition='gpu'", "sinfo lists: local"]),
        (["hydra.launcher.partition=null"], []),  # the cluster's default partition: fits
    ],
)
def test_check_before_submission_reads_the_partition_from_sinfo(
    slurm_cluster,  # noqa: F811
    monkeypatch,
    overrides,
    keys,
):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    config = compose_with_hydra(*README_SLURM[1:], *overrides)
    if not keys:
        check_submission(config)
        return
    with pytest.raises(ConfigError) as error:
        check_submission(config)
    for key in keys:
        assert key in str(error.value)


def event_files(run_dir: Path) -> int:
    return len(list((run_dir / "tb").glob("events.*")))


def first_step_of_newest_start(run_dir: Path) -> int | None:
    """The first ``train/loss`` step of the newest event file below ``run_dir/tb`` (None: none yet)."""
    newest = max((run_dir / "tb").glob("events.*"), key=lambda path: path.stat().st_ctime_ns)
    try:
        frame = SummaryReader(str(newest), pivot=False).scalars
    except Exception:  # an event file being written
        return None
    steps = frame[frame.tag == "train/loss"].step if len(frame) else []
    return int(min(steps)) if len(steps) else None


def max_step(run_dir: Path) -> int:
    """The last ``train/loss`` step written so far below ``run_dir/tb`` (-1: none)."""
    if not any((run_dir / "tb").glob("events.*")):
        return -1
    try:
        steps = [s for s, _ in scalars(run_dir / "tb").get("train/loss", [])]
    except Exception:  # an event file being written
        return -1
    return max(steps, default=-1)


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            stderr = process.communicate()[1]
            raise AssertionError(f"the sweep ended while waiting for {what}: {stderr[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slurm
def test_preempted_requeued_and_signalled_job_resumes_exactly(slurm_cluster, tmp_path):  # noqa: F811
    """One job: USR2 (submitit's pre-emption / time-limit warning), ``scontrol requeue`` and
    ``scancel --signal=TERM`` in turn; each time it saves, is requeued and resumes in its run dir."""
    steps, pauses = 40, [5, 15, 25]
    run = [*SMALL, "model.hidden_size=8", f"trainer.max_steps={steps}", "trainer.val_check_interval=20"]
    # Held at the end of each of these batches until the signal has arrived (tests/slurm_helpers.py).
    pause = f"+callbacks.pause={{_target_:tests.slurm_helpers.PauseAtBatches,batches:{pauses}}}".replace(
        " ", ""
    )
    sweep = tmp_path / "sweep"
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/train.py",
            *README_SLURM,
            *run,
            pause,
            "seed=3",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env=dict(slurm_cluster.env, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    interruptions = [
        ["scancel", "--signal=USR2"],
        ["scontrol", "requeue"],
        ["scancel", "--signal=TERM"],
    ]
    try:
        run_dir = wait_until(lambda: next(sweep.glob("0_*"), None), 300, "the job dir", process)
        job_id = wait_until(lambda: [j for j, s in slurm_cluster.jobs() if s == "RUNNING"], 300, "the job")[0]
        for start, (batch, command) in enumerate(zip(pauses, interruptions, strict=True), start=1):
            wait_until(lambda b=batch: (run_dir / f"paused_at_{b}").exists(), 300, f"batch {batch}", process)
            slurm_cluster.run(*command, job_id)
            # Stopped before batch + 1, saved, requeued, started again: a new event file.
            wait_until(lambda n=start + 1: event_files(run_dir) == n, 300, f"start {start + 1}", process)
            # Saved at the first batch boundary at which the run sees the signal (right after the
            # held batch, or one batch later where the stop is agreed at the end of a batch). Read
            # from the new start's first logged step, not from last.ckpt: the new start may already
            # have saved again (a validation at step 20) by the time the test looks.
            resumed_at = wait_until(
                lambda: first_step_of_newest_start(run_dir), 300, f"start {start + 1}'s first step"
            )
            assert batch + 1 <= resumed_at <= batch + 2, command
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    log = "\n".join(p.read_text() for p in sorted((sweep / ".submitit").glob("*/*_0_log.err")))
    assert log.count("rnnflow: requeued SLURM job: resuming from") == 3
    assert slurm_cluster.run("scontrol", "show", "job", job_id).stdout.count("Restarts=3") == 1
    # Four starts of one job, one event file each, in the same run dir; every step exactly once.
    assert event_files(run_dir) == 4
    continued = scalars(run_dir / "tb")
    assert [s for s, _ in continued["train/loss"]] == list(range(steps))
    # The same numbers as an uninterrupted run of the same config (CPU, same seed).
    reference = train_cli(None, *run, "seed=3", f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-2000:]
    uninterrupted = scalars(tmp_path / "reference" / "tb")
    for tag in ("train/loss", "grad_flow/layer0/log10_ratio", "spectral/layer0/f/radius", "clip/pre_norm"):
        assert continued[tag] == uninterrupted[tag], tag
    # The final metrics. (Intermediate validations come one batch earlier per resume: rnnflow's
    # resume, not SLURM's; the same happens after a local Ctrl-C and resume.)
    assert continued["val/loss"][-1] == uninterrupted["val/loss"][-1]
    slurm_cluster.wait_for_no_jobs()


@pytest.mark.slurm
def test_ddp_over_two_slurm_tasks_matches_ddp_spawn(slurm_cluster, tmp_path):  # noqa: F811
    run = [
        *SMALL,
        "model.hidden_size=8",
        "trainer.max_steps=8",
        "trainer.val_check_interval=4",
        "diagnostics.every_n_steps=4",
        "diagnostics.spectral_every_n_steps=4",
        "clip.max_norm=0.5",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
    ]
    sweep = tmp_path / "sweep"
    done = train_cli(slurm_cluster, *README_SLURM[:-1], "trainer=ddp", *run, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    job = next(sweep.glob("0_*"))
    # Lightning's rank lines go to the job's stderr, or to the run's train.log (rnnflow's log file).
    log_files = [*(sweep / ".submitit").glob("*/*_log.*"), *sweep.glob("*/train.log")]
    logs = "\n".join(p.read_text() for p in log_files)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs  # two SLURM tasks
    assert len(list((job / "tb").glob("events.*"))) == 1  # written by rank 0 only
    on_slurm = scalars(job / "tb")
    spawn = train_cli(None, "trainer=ddp_spawn", *run, f"hydra.run.dir={tmp_path / 'spawn'}")
    assert spawn.returncode == 0, spawn.stderr[-2000:]
    reference = scalars(tmp_path / "spawn" / "tb")
    diagnostics = sorted(t for t in reference if t.startswith(DIAGNOSTIC_TAGS))
    assert any(t.startswith("grad_flow/") for t in diagnostics)
    assert any(t.startswith("spectral/") for t in diagnostics)
    assert any(t.startswith("clip/") for t in diagnostics)
    assert sorted(t for t in on_slurm if t.startswith(DIAGNOSTIC_TAGS)) == diagnostics
    for tag in diagnostics:
        steps = [s for s, _ in on_slurm[tag]]
        assert len(steps) == len(set(steps)), f"{tag} written more than once per step"
        assert on_slurm[tag] == reference[tag], tag  # the same all-reduce over gloo: the same floats
    slurm_cluster.wait_for_no_jobs()


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_warning_from_slurm_requeues_and_resumes(slurm_cluster, tmp_path):  # noqa: F811
    """SLURM itself sends the warning: a 2-minute job asks for USR2 60 s before its limit."""
    steps = 20
    run = [*SMALL, "model.hidden_size=8", f"trainer.max_steps={steps}", "trainer.val_check_interval=10"]
    pause = "+callbacks.pause={_target_:tests.slurm_helpers.PauseAtBatches,batches:[5]}"
    sweep = tmp_path / "sweep"
    done = train_cli(
        slurm_cluster,
        *README_SLURM,
        *run,
        pause,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=60",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next(sweep.glob("0_*"))
    log = "\n".join(p.read_text() for p in sorted((sweep / ".submitit").glob("*/*_0_log.err")))
    assert "Caught signal SIGUSR2" in log and "timed-out" in log  # submitit: a time-out, counted
    assert "rnnflow: interrupted at step 6" in log
    assert event_files(run_dir) >= 2
    assert [s for s, _ in scalars(run_dir / "tb")["train/loss"]] == list(range(steps))
    slurm_cluster.wait_for_no_jobs()
