"""The run tells its story: the end-of-run summary (console and train.log), its resume command, --help."""

from __future__ import annotations

import math
import re
import shlex
import signal
import subprocess
import time

import pytest
from conftest import ROOT, TINY

from rnnflow.report.profiles import load_profiles

FAST = [
    *TINY,
    "trainer.enable_progress_bar=false",
    "diagnostics.every_n_steps=5",
    "trainer.val_check_interval=5",
]


def _train(python: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "scripts/train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _summary(text: str) -> str:
    start = text.index("rnnflow: run ")
    return text[start:]


def test_a_run_ends_with_its_summary_and_the_resume_command_works(tmp_path, python):
    run_dir = tmp_path / "runs" / "a"
    args = [*FAST, "model=lstm", "trainer.max_steps=10", "clip.max_norm=1e-3", f"hydra.run.dir={run_dir}"]
    result = _train(python, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(result.stdout + result.stderr)
    assert "rnnflow: run finished after 10 steps in" in summary
    loss = re.search(r"val/loss (\S+) vs the baseline (\S+) \((\S+)% of it\): (solved|not solved)", summary)
    assert loss is not None, summary
    assert float(loss.group(2)) == pytest.approx(1 / 6, rel=1e-3)  # the adding problem's baseline
    # Per layer: the last probe's log10 ratio and decay rate, the same numbers as its profile record.
    record = load_profiles(run_dir).at("layer0")
    hidden = record.series["hidden"]
    expected = math.log10(hidden[0] / hidden[-1])
    line = re.search(
        r"layer0 \(step 9, T=12\): h: log10 ratio (\S+), decay rate α (\S+); c: log10 ratio", summary
    )
    assert line is not None, summary
    assert float(line.group(1)) == pytest.approx(expected, abs=0.006)
    assert "clipping at 0.001: 10 of 10 optimizer steps clipped (100.0%)" in summary
    assert f"run dir:     {run_dir}" in summary
    assert f"look at it:  tensorboard --logdir {run_dir}" in summary
    # train.log holds the run's log lines: Lightning's and the summary.
    log_text = (run_dir / "train.log").read_text()
    assert "Trainer.fit` stopped" in log_text and "rnnflow: run finished after 10 steps" in log_text
    assert (result.stdout + result.stderr).count("Trainer.fit` stopped") == 1  # not printed twice

    # The printed resume command continues the run in its own directory, to twice the steps.
    resume = re.search(r"resume:\s+python scripts/train.py (.*)", summary).group(1)
    assert "trainer.max_steps=20" in resume and resume.count("trainer.max_steps") == 1
    launch = tmp_path / "resume_launch"  # where Hydra records this launch (else under the repo's logs/)
    resumed = _train(python, *shlex.split(resume), f"hydra.run.dir={launch}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rnnflow: run finished after 20 steps" in resumed.stdout + resumed.stderr
    # The continued run's train.log tells both launches; Hydra's record of the resume keeps its own.
    log_text = (run_dir / "train.log").read_text()
    assert "run finished after 10 steps" in log_text and "run finished after 20 steps" in log_text
    assert log_text.count("Trainer.fit` stopped") == 2
    assert "run finished after 20 steps" in (launch / "train.log").read_text()
    assert sorted(p.name for p in launch.iterdir()) == [".hydra", "train.log"]
    assert load_profiles(run_dir).steps("layer0").tolist() == [0, 5, 9, 10, 15, 19]


def test_sigterm_prints_the_summary_with_the_resume_command(tmp_path, python):
    run_dir = tmp_path / "runs" / "b"
    args = [*FAST, "model=rnn", "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        [python, "scripts/train.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.5)  # the first validation (step 5) has saved a checkpoint: training is under way
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 143, output[-3000:]
    summary = _summary(output)
    assert "rnnflow: run stopped by SIGTERM after" in summary
    assert "clipping: off" in summary
    resume = re.search(r"resume:\s+python scripts/train.py (.*)", summary).group(1)
    assert f"ckpt_path={run_dir}/checkpoints/last.ckpt" in resume and "trainer.max_steps=100000" in resume
    assert "rnnflow: run stopped by SIGTERM" in (run_dir / "train.log").read_text()


def test_help_is_rnnflows_own(python):
    result = _train(python, "--help", "model=gru", timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("rnnflow: train an RNN, LSTM or GRU")
    assert "model: gru, lstm, rnn" in text and "task: adding, copy" in text  # groups and options
    assert "model.hidden_size=64" in text and "task.seq_len=50" in text and "trainer.max_steps=2000" in text
    assert "== Examples ==" in text and text.count("python scripts/train.py ") >= 3
    assert "Powered by Hydra" not in text


@pytest.mark.parametrize(
    "path",
    [
        "/tmp/runs/a/checkpoints/last.ckpt",
        "/tmp/multirun/0_model=rnn,seed=0/last.ckpt",
        "/tmp/my runs/it's [1]/last.ckpt",
    ],
)
def test_printed_ckpt_path_parses_back_through_the_shell_and_hydra(path):
    """The resume and interrupt lines print ``ckpt_path`` so that a copy-paste gives Hydra the path."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rnnflow.config.command_line import shell_override

    (word,) = shlex.split(shell_override("ckpt_path", path))
    (override,) = OverridesParser.create().parse_overrides([word])
    assert override.key_or_group == "ckpt_path" and override.value() == path
