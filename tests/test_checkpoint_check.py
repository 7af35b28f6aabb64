"""A checkpoint that cannot resume the run is refused in one line, before training."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, TINY, compose_config

from rnnflow.config import ConfigError
from rnnflow.runtime.build import build_module, build_task_from_config
from rnnflow.runtime.checkpoint_check import check_checkpoint


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    from rnnflow.runtime.run import train

    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(compose_config(*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2", output_dir=out))
    return out / "checkpoints" / "last.ckpt"


def _check(path: Path, *overrides: str) -> None:
    cfg = compose_config(*TINY, *overrides)
    module = build_module(cfg, build_task_from_config(cfg))
    check_checkpoint(path, module, dict(module.hparams))


def _refused(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        _check(path, *overrides)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"ckpt_path='{path}'")
    return message


def test_the_run_s_own_checkpoint_passes(good_checkpoint):
    _check(good_checkpoint)
    _check(good_checkpoint, "task.seq_len=20", "optim.lr=1e-4")  # same architecture and optimizer


def test_text_file(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("step 100: loss 0.1\n")
    assert "not a checkpoint (torch checkpoints are zip archives" in _refused(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    assert "the file is empty (0 bytes)" in _refused(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated(tmp_path, good_checkpoint, fraction):
    data = good_checkpoint.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert "truncated or corrupted checkpoint" in _refused(path)


def test_corrupted_pickle(tmp_path, good_checkpoint):
    """Garbled bytes inside the pickled structure (torch: KeyError, UnpicklingError, ...)."""
    path = tmp_path / "corrupted.ckpt"
    shutil.copy(good_checkpoint, path)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(path.read_bytes())
    for offset in range(start + 40, start + min(info.compress_size, 400), 7):
        data[offset] = (data[offset] + 101) % 256
    path.write_bytes(bytes(data))
    assert "truncated or corrupted checkpoint" in _refused(path)


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["model.hidden_size=16"], "model.hidden_size=8 in the checkpoint, 16 now"),
        (["model=gru"], "model.cell='lstm' in the checkpoint, 'gru' now"),
        (["model.num_layers=2"], "model.num_layers=1 in the checkpoint, 2 now"),
        (["task=copy"], "task.name='adding' in the checkpoint, 'copy' now"),
    ],
)
def test_another_architecture_names_the_keys(good_checkpoint, overrides, named):
    message = _refused(good_checkpoint, *overrides)
    assert "written for another model" in message and named in message


def test_another_optimizer(good_checkpoint):
    message = _refused(good_checkpoint, "optim=sgd")
    assert "written with optim._target_=torch.optim.Adam, the config has torch.optim.SGD" in message


def test_another_optimizer_without_recorded_hparams(tmp_path, good_checkpoint):
    import torch

    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"] = {}
    path = tmp_path / "no_hparams.ckpt"
    torch.save(checkpoint, path)
    assert "its optimizer state lacks dampening, momentum, nesterov of SGD" in _refused(path, "optim=sgd")


def test_cli_bad_checkpoint_one_line_and_no_run_dir(tmp_path, python):
    path = tmp_path / "last.ckpt"
    path.write_text("not a checkpoint")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [python, str(ROOT / "scripts" / "train.py"), f"ckpt_path={path}", *TINY],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rnnflow: invalid config: ckpt_path='{path}': not a checkpoint (torch checkpoints are zip "
        "archives; this file starts with b'not ')"
    ]
    assert list(cwd.iterdir()) == []
