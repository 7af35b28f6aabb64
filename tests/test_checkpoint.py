"""No run lost: checkpoints written often and atomically, of good states only, one live run per dir.

Units: the atomic write (and its failure), the good-state check, the run-dir lock, stale files.
Subprocesses, as a user runs them: SIGKILL at random moments then resume (the long version is
slow), a full disk (a small tmpfs, root only), a second run into a live run dir, a resume that
changes the data shape. In-process: a diverging run keeps its last good state, two resumes in a
row, the printed resume command run again.
"""

from __future__ import annotations

import errno
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, TINY, compose_config, read_scalars
from omegaconf import open_dict
from step_file import last_step

from rnnflow.config import ConfigError
from rnnflow.runtime.checkpoint import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    RunCheckpoint,
    atomic_write,
    problem_with_state,
)
from rnnflow.runtime.run_lock import RunDirInUse, RunDirLock


def train_script(*args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen(
        [sys.executable, "scripts/train.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def step_file(path: Path) -> list[str]:
    return ["+callbacks.step_file._target_=step_file.StepFile", f"+callbacks.step_file.path={path}"]


def wait_for_step(path: Path, step: int, process: subprocess.Popen, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = last_step(path)
        if current is not None and current >= step:
            return current
        if process.poll() is not None:
            raise AssertionError(f"training exited early: {process.communicate()[1][-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rnnflow:")]


# --- the atomic write -------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_or_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_write(path, lambda f: f.write(b"good"))
    assert path.read_bytes() == b"good"

    def full_disk(file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointWriteError) as failure:
        atomic_write(path, full_disk)
    assert failure.value.errno == errno.ENOSPC
    message = str(failure.value)
    assert "\n" not in message and str(path) in message and "No space left on device" in message
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temporary file is gone


def test_atomic_checkpoint_io_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    state = {"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}
    io.save_checkpoint(state, tmp_path / "sub" / "a.ckpt")
    loaded = io.load_checkpoint(tmp_path / "sub" / "a.ckpt", weights_only=True)
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.ckpt"]


class FakeTrainer:
    def __init__(self, **metrics: float) -> None:
        self.callback_metrics = {k.replace("_", "/"): torch.tensor(v) for k, v in metrics.items()}


def test_a_good_state_has_finite_weights_and_loss():
    model = torch.nn.Linear(2, 2)
    assert problem_with_state(FakeTrainer(train_loss=0.5), model) is None
    assert problem_with_state(FakeTrainer(), model) is None  # nothing evaluated yet
    assert problem_with_state(FakeTrainer(train_loss=math.nan), model) == "train/loss is nan"
    with torch.no_grad():
        model.weight.fill_(1e10)  # large but finite: the weights alone do not tell
    assert problem_with_state(FakeTrainer(train_loss=0.5), model) is None
    model.weight.data[0, 0] = math.inf
    assert problem_with_state(FakeTrainer(train_loss=0.5), model) == "the weights are not finite"


def test_stale_temporary_and_pending_files_are_removed(tmp_path):
    import socket

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [
        f".last.ckpt.{host}.{dead.pid}.tmp",
        f".last.ckpt.{host}.{dead.pid}.pending",
        f"..last.ckpt.{host}.{dead.pid}.pending.{host}.{dead.pid}.tmp",
        f".last.ckpt.otherhost.{os.getpid()}.tmp",
    ]
    live = f".last.ckpt.{host}.{os.getppid()}.tmp"  # a live process on this host (pytest's parent)
    for name in [*names, live, "last.ckpt", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    RunCheckpoint(tmp_path).remove_stale_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, "last.ckpt", "notes.txt"])


# --- the run-dir lock ---------------------------------------------------------------------------


def test_a_live_lock_is_refused_and_a_dead_one_taken_over(tmp_path):
    with RunDirLock(tmp_path):
        text = (tmp_path / "run.lock").read_text()
        assert f"pid={os.getpid()}" in text
        with pytest.raises(RunDirInUse) as busy:  # another open file description: refused
            RunDirLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(busy.value) and "\n" not in str(busy.value)
    assert not (tmp_path / "run.lock").exists()
    # A holder killed with SIGKILL leaves the file; the kernel released its flock: stale.
    code = f"from rnnflow.runtime.run_lock import RunDirLock; RunDirLock({str(tmp_path)!r}).acquire()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code + "; print(1, flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "1"
    with pytest.raises(RunDirInUse, match=f"pid {holder.pid}"):
        RunDirLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    assert f"pid={holder.pid}" in (tmp_path / "run.lock").read_text()  # left behind
    with RunDirLock(tmp_path):
        assert f"pid={os.getpid()}" in (tmp_path / "run.lock").read_text()


# --- in-process runs ---------------------------------------------------------------------------


class ScaleWeights(L.Callback):
    """Test helper: multiply every weight by ``factor`` at the end of batch ``batch`` (a divergence
    the non-finite policy cannot see: the weights stay finite, the losses after it are not)."""

    def __init__(self, batch: int, factor: float) -> None:
        self.batch, self.factor = batch, factor

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            with torch.no_grad():
                for param in pl_module.parameters():
                    param.mul_(self.factor)


def test_a_diverged_state_is_never_kept(tmp_path):
    """Weights 1e10 (finite), training and validation losses NaN: last.ckpt stays the last good state."""
    from rnnflow.runtime.run import train

    out = tmp_path / "run"
    cfg = compose_config(
        *TINY,
        "checkpoint.every_n_steps=2",
        "trainer.val_check_interval=5",
        "trainer.max_steps=12",
        "model=rnn",
        "model.nonlinearity=relu",
        output_dir=out,
    )
    with open_dict(cfg):
        cfg.callbacks.diverge = {"_target_": f"{__name__}.ScaleWeights", "batch": 6, "factor": 1e30}
    train(cfg)
    losses = dict(read_scalars(out)["train/loss"])
    assert all(math.isfinite(losses[s]) for s in range(7)) and not math.isfinite(losses[7])
    state = load(out / "checkpoints" / "last.ckpt")
    # step 6 (the end of batch 5) is the last state whose next loss was finite
    assert state["global_step"] == 6
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e6 for v in state["state_dict"].values())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]


def test_two_resumes_in_a_row_and_the_same_command_again(train_run):
    few = ["trainer.val_check_interval=3", "diagnostics.every_n_steps=2", "checkpoint.every_n_steps=2"]
    few.append("clip.max_norm=0.5")
    _, run = train_run(*few, "trainer.max_steps=4", name="run")
    checkpoint = run / "checkpoints" / "last.ckpt"
    for end in (8, 12, 12):  # the last one repeats the previous command: nothing left to train
        _, elsewhere = train_run(*few, f"trainer.max_steps={end}", f"ckpt_path={checkpoint}", name=f"r{end}")
        assert not elsewhere.exists()  # written into the run's own dir
        assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]  # never last-v1.ckpt
        assert load(checkpoint)["global_step"] == end
    _, full = train_run(*few, "trainer.max_steps=12", name="full")
    continued, uninterrupted = read_scalars(run), read_scalars(full)
    for tag in ("train/loss", "clip/pre_norm", "clip/events"):
        assert continued[tag] == uninterrupted[tag], tag  # each step once, the same values
    assert [s for s, _ in continued["train/loss"]] == list(range(12))
    # the probe also runs at each run's last step (3 and 7 here): the common steps agree
    probed = dict(continued["grad_flow/layer0/log10_ratio"])
    assert all(probed[s] == v for s, v in uninterrupted["grad_flow/layer0/log10_ratio"])


def test_a_resume_that_changes_the_data_shape_is_refused(train_run, tmp_path):
    _, run = train_run("trainer.max_steps=2", name="run")
    checkpoint = run / "checkpoints" / "last.ckpt"
    events = sorted((run / "tb").iterdir())
    code, stderr = finish(
        train_script(
            *TINY, "task.seq_len=20", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'longer'}"
        )
    )
    assert code == 2, stderr[-2000:]
    [line] = error_lines(stderr)
    assert "task.seq_len=12 -> 20" in line and "length 12 -> 20" in line and "Traceback" not in stderr
    assert sorted((run / "tb").iterdir()) == events  # nothing trained
    # a change that keeps the shape resumes
    train_run("trainer.max_steps=4", "task.batch_size=4", f"ckpt_path={checkpoint}", name="branch")
    assert load(checkpoint)["global_step"] == 4
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a checkpoint"):
        train_run("trainer.max_steps=4", f"ckpt_path={bad}", name="bad")


# --- subprocesses: a live run dir, SIGKILL, a full disk ---------------------------------------


def test_a_second_run_into_a_live_run_dir_is_refused(tmp_path, train_run):
    run_dir, steps = tmp_path / "run", tmp_path / "steps"
    live = train_script(
        *TINY, "trainer.max_steps=100000", "checkpoint.every_n_steps=2", f"hydra.run.dir={run_dir}",
        *step_file(steps),
    )  # fmt: skip
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    try:
        wait_for_step(steps, 3, live)
        record = (run_dir / ".hydra" / "overrides.yaml").read_bytes()
        code, stderr = finish(train_script(*TINY, "seed=5", f"hydra.run.dir={run_dir}"), timeout=120)
        assert code == 2, stderr[-2000:]
        [line] = error_lines(stderr)
        assert f"run dir {run_dir} is in use by a live run (pid {live.pid} on host" in line
        assert (run_dir / ".hydra" / "overrides.yaml").read_bytes() == record  # the live run's record
        # a resume into the live run's dir is refused too
        with pytest.raises(RunDirInUse, match=f"pid {live.pid}"):
            train_run("trainer.max_steps=100000", f"ckpt_path={checkpoint}", name="resume")
    finally:
        live.kill()
        live.wait()
    # killed: its lock is stale, and a resume takes the run dir over
    end = load(checkpoint)["global_step"] + 2
    train_run(f"trainer.max_steps={end}", f"ckpt_path={checkpoint}", name="resume")
    assert load(checkpoint)["global_step"] == end
    assert not (run_dir / "run.lock").exists()


SIGKILL_RUN = [
    *TINY,
    "model.hidden_size=96",  # a checkpoint of ~0.5 MB: saves take a visible share of the time
    "trainer.val_check_interval=10",
    "diagnostics.every_n_steps=7",
    "clip.max_norm=0.5",
]


def sigkill_and_resume(tmp_path: Path, kills: int, seed: int) -> dict[str, int]:
    """Kill a run ``kills`` times, at random moments and during saves (every other kill, as soon as a
    temporary file appears), check the checkpoint after each kill, resume to the end."""
    every = 2
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    counts = {"kills": 0, "killed_writing": 0, "killed_before_commit": 0}
    saved, reached = -1, 0
    steps = tmp_path / "steps"  # every process appends the steps it completed
    for index in range(kills):
        args = [*SIGKILL_RUN, f"checkpoint.every_n_steps={every}", "trainer.max_steps=100000"]
        args += step_file(steps)
        before = len(steps.read_text().split()) if steps.exists() else 0
        if index == 0:
            process = train_script(*args, f"hydra.run.dir={run_dir}")
        else:
            own_dir = f"hydra.run.dir={tmp_path / 'h' / str(index)}"  # the resume's own Hydra record
            process = train_script(*args, f"ckpt_path={checkpoint}", own_dir)
        # this process has trained its first batch (the first run: past its first checkpoint)
        deadline, wanted = time.monotonic() + 180, before + (every + 2 if index == 0 else 1)
        while len(steps.read_text().split() if steps.exists() else []) < wanted:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
            time.sleep(0.01)
        if index % 2:  # at a random moment
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # during a save: as soon as a temporary file is being written
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                name.endswith(".tmp") for name in os.listdir(checkpoint.parent)
            ):
                time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        counts["kills"] += 1
        reached = last_step(steps)
        leftovers = [p.name for p in checkpoint.parent.iterdir() if p.name != "last.ckpt"]
        counts["killed_writing"] += any(name.endswith(".tmp") for name in leftovers)
        counts["killed_before_commit"] += any(name.endswith(".pending") for name in leftovers)
        state = load(checkpoint)  # always loadable
        step = state["global_step"]
        assert step >= saved, (index, step, saved)
        # at most N + 1 steps behind the last completed step (the save of step s is committed once
        # batch s + 1 has shown it is good)
        assert step >= reached - every - 1, (index, step, reached)
        saved = step
    end = max(saved, last_step(steps)) + 4
    last = [f"trainer.max_steps={end}", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'h' / 'end'}"]
    code, stderr = finish(train_script(*SIGKILL_RUN, *step_file(steps), *last))
    assert code == 0, stderr[-3000:]
    # the chain continues exactly the uninterrupted run: every logged step, and the final weights
    from rnnflow.runtime.run import train

    full = tmp_path / "full"
    train(compose_config(*SIGKILL_RUN, f"trainer.max_steps={end}", output_dir=full))
    chain, uninterrupted = read_scalars(run_dir)["train/loss"], dict(read_scalars(full)["train/loss"])
    # A SIGKILL loses the events TensorBoard had not flushed yet; the last resume logs every step
    # from its checkpoint on, and every step logged by any process has the uninterrupted value.
    assert {s for s, _ in chain} >= set(range(saved, end))
    assert all(uninterrupted[s] == v for s, v in chain)  # re-run steps repeat the same values
    final, reference = load(checkpoint), load(full / "checkpoints" / "last.ckpt")
    assert final["global_step"] == reference["global_step"] == end
    for name, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
    return counts


def test_sigkill_at_random_moments_then_resume(tmp_path):
    counts = sigkill_and_resume(tmp_path, kills=3, seed=0)
    assert counts["kills"] == 3


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_many_times(tmp_path, capsys):
    counts = sigkill_and_resume(tmp_path, kills=22, seed=1)
    with capsys.disabled():
        print(f"\nSIGKILL results: {counts}")
    assert counts["kills"] == 22


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint():
    # Not pytest's tmp_path: a mount point under it would outlive a failed unmount.
    mount = Path(tempfile.mkdtemp(prefix="rnnflow-full-disk-"))
    # A checkpoint is ~1.3 MB (H=160 LSTM with Adam's moments): room for one, not for the next.
    if not _mount_tmpfs(mount, "2m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        run_dir = mount / "run"
        args = [*TINY, "model.hidden_size=160", "checkpoint.every_n_steps=2", "trainer.max_steps=50"]
        code, stderr = finish(train_script(*args, f"hydra.run.dir={run_dir}"))
        assert code == 1, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        [line] = error_lines(stderr)
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        assert "No space left on device" in line and f"the last good state is {checkpoint} (step 2)" in line
        assert load(checkpoint)["global_step"] == 2  # intact and loadable
        assert [p.name for p in checkpoint.parent.iterdir()] == ["last.ckpt"]  # nothing leaked
        assert not (run_dir / "run.lock").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()
