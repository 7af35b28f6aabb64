"""The Gradient Flow tab in a real headless Chromium, served by ``tensorboard --logdir`` on real runs.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` package (the ``dev`` extra), which drives the system browser. The plugin must be
installed (``pip install -e .``: its ``tensorboard_plugins`` entry point).

Each test saves a screenshot under its tmp dir. With ``RNNFLOW_README_SCREENSHOTS=docs/images``
the three README pictures (a single run, an 8-run sweep, a 3-layer LSTM) are written there too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY

from rnnflow.report.profiles import load_profiles

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
if not any(point.name == "gradient_flow" for point in entry_points(group="tensorboard_plugins")):
    pytest.skip("rnnflow is not installed (pip install -e .): no plugin entry point", allow_module_level=True)

README_IMAGES = os.environ.get("RNNFLOW_README_SCREENSHOTS")
STEPS = ["trainer.max_steps=21", "diagnostics.every_n_steps=10", "diagnostics.spectral_every_n_steps=10"]
SMALL = [o for o in TINY if not o.startswith("task.seq_len")] + ["trainer.val_check_interval=21"]


def _train(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _train_in_process(run_dir: Path, overrides: list[str]) -> None:
    """A run trained in this process (no interpreter start per run), its Hydra files written as Hydra does."""
    from conftest import compose_config

    from rnnflow.runtime.run import train

    cfg = compose_config(*overrides)
    cfg.paths.output_dir = str(run_dir)  # not as an override: a sweep job's dir name holds '=' and ','
    train(cfg)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text("# written by the test\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three log dirs: one RNN run (python scripts/train.py), an 8-run sweep (cell × truncation × seed)
    and a 3-layer LSTM."""
    root = tmp_path_factory.mktemp("logs")
    single = root / "single"
    _train(*SMALL, *STEPS, "model=rnn", "task.seq_len=40", f"hydra.run.dir={single}/runs/rnn")
    sweep = root / "sweep"
    job = 0
    for model in ("rnn", "lstm"):
        for chunk in ("null", "10"):
            for seed in (0, 1):
                swept = [f"model={model}", f"tbptt.chunk={chunk}", f"seed={seed}"]
                name = f"{job}_{','.join(swept)}"
                _train_in_process(
                    sweep / "multirun" / "sweep" / name, [*SMALL, *STEPS, "task.seq_len=30", *swept]
                )
                job += 1
    deep = root / "deep"
    lstm3 = ["model=lstm", "model.num_layers=3", "task.seq_len=40"]
    _train_in_process(deep / "runs" / "lstm3", [*SMALL, *STEPS, *lstm3])
    return {"single": single, "sweep": sweep, "deep": deep}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class TensorBoard:
    def __init__(self, logdir: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--reload_interval",
                "1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, expect_runs: int, timeout: float = 240) -> dict:
        """Wait until the plugin lists ``expect_runs`` runs (TensorBoard loads event files in a thread)."""
        deadline, body = time.time() + timeout, None
        while time.time() < deadline:
            assert self.process.poll() is None, "tensorboard exited"
            try:
                body = _get(f"{self.url}/data/plugin/gradient_flow/runs")
                if len(body["runs"]) >= expect_runs:
                    return body
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the plugin did not list {expect_runs} runs in {timeout} s: {body}")

    def ready(self, timeout: float = 240) -> None:
        """Wait until the server answers (it lists its plugins)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, "tensorboard exited"
            try:
                _get(f"{self.url}/data/plugins_listing")
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"tensorboard did not answer in {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # its reload threads can outlast SIGTERM on a loaded machine
            self.process.kill()
            self.process.wait(timeout=20)
        self._log.close()


@pytest.fixture
def tensorboard(tmp_path: Path) -> Iterator:
    servers = []

    def start(logdir: Path) -> TensorBoard:
        server = TensorBoard(logdir, tmp_path / f"tensorboard{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _open_tab(browser, server: TensorBoard):
    """Open TensorBoard's page on the Gradient Flow tab; returns (page, the tab's iframe) once drawn."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{server.url}/#gradient_flow")
    deadline = time.time() + 240
    frame = None
    while frame is None and time.time() < deadline:
        frame = next((f for f in page.frames if "plugin_entry.html" in f.url), None)
        page.wait_for_timeout(200)
    assert frame is not None, "TensorBoard did not open the Gradient Flow tab"
    frame.wait_for_function("window.gradientFlow && window.gradientFlow.ready", timeout=240_000)
    return page, frame


def _page_data(frame) -> dict:
    return frame.evaluate("JSON.parse(JSON.stringify(window.gradientFlow))")


def _screenshot(page, tmp_path: Path, name: str, readme: bool = False) -> None:
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / f"{name}.png"))
    if readme and README_IMAGES:
        Path(README_IMAGES).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(README_IMAGES) / f"{name}.png")


def _assert_lines_are_the_records(lines: list[dict], run_dirs: dict[str, Path], step: int | None) -> None:
    for line in lines:
        profiles = load_profiles(run_dirs[line["run"]])
        record = profiles.at(line["layer"], step if step is not None else None)
        if step is not None:  # the latest record at or before the slider's step
            steps = profiles.steps(line["layer"])
            record = profiles.at(line["layer"], int(steps[steps <= step][-1]))
        assert line["step"] == record.step
        expected = record.series[line["series"]]
        drawn = np.array([np.nan if v is None else v for v in line["values"]], dtype=np.float64)
        np.testing.assert_array_equal(drawn, expected)  # JSON carries float64 exactly


def _tb_run_dirs(logdir: Path) -> dict[str, Path]:
    """TensorBoard run name (event dir relative to the logdir) -> run directory."""
    return {
        p.parent.relative_to(logdir).as_posix(): p.parent.parent
        for p in logdir.rglob("events.out.tfevents.*")
    }


def test_single_run_lines_values_and_slider(browser, tensorboard, logs, tmp_path):
    server = tensorboard(logs["single"])
    server.wait(expect_runs=1)
    page, frame = _open_tab(browser, server)
    data = _page_data(frame)
    run_dirs = _tb_run_dirs(logs["single"])
    assert data["steps"] == [0, 10, 20]
    assert [(line["layer"], line["series"]) for line in data["lines"]] == [("layer0", "hidden")]
    assert data["lines"][0]["step"] == 20  # default: the latest probe
    _assert_lines_are_the_records(data["lines"], run_dirs, None)
    assert frame.locator("path.gf-line").count() == 1
    # The fitted α line spans the steps it was fitted on; a vanilla RNN also gets its ρ line.
    fit = data["fits"][0]
    assert (fit["t0"], fit["t1"], fit["length"]) == (0, 39, 40) and fit["alpha"] > 0
    assert len(data["theory"]) == 1 and data["theory"][0]["rho"] > 0
    assert frame.locator("path.gf-fit").count() == 1 and frame.locator("path.gf-theory").count() == 1
    assert frame.locator("#gf-heatmap").count() == 1 and frame.locator("#gf-colourbar").count() == 1
    assert data["heatmap"]["steps"] == [0, 10, 20] and data["heatmap"]["length"] == 40
    _screenshot(page, tmp_path, "gradient_flow_single_run", readme=True)

    slider = frame.locator("#gf-step")
    slider.fill("1")  # the second probe: step 10
    frame.wait_for_function("window.gradientFlow.ready && window.gradientFlow.lines[0].step === 10")
    data = _page_data(frame)
    assert data["step"] == 10 and "10 · probe 2 of 3" in frame.locator("#gf-step-label").inner_text()
    _assert_lines_are_the_records(data["lines"], run_dirs, 10)
    _screenshot(page, tmp_path, "single_run_step10")


def test_sweep_of_eight_runs_with_truncation(browser, tensorboard, logs, tmp_path):
    server = tensorboard(logs["sweep"])
    listing = server.wait(expect_runs=8)
    page, frame = _open_tab(browser, server)
    data = _page_data(frame)
    assert len(data["runs"]) == 8
    # Next to each run: the swept keys, not the keys every run shares.
    configs = [run["config"] for run in data["runs"]]
    assert all(set(config) == {"model", "tbptt.chunk", "seed"} for config in configs), configs
    assert frame.locator("#gf-run-list li").count() == 8
    assert "tbptt.chunk=10" in frame.locator("#gf-run-list").inner_text()
    # rnn runs draw h, lstm runs h and c: 4 + 4·2 lines.
    assert len(data["lines"]) == 12 and frame.locator("path.gf-line").count() == 12
    _assert_lines_are_the_records(data["lines"], _tb_run_dirs(logs["sweep"]), None)
    # Truncated BPTT (chunks of 10 of 30 steps): the first 20 steps are exactly 0, drawn on the zero strip,
    # and the fit covers only the last chunk.
    truncated = {run["run"] for run in listing["runs"] if run["config"]["tbptt.chunk"] == "10"}
    zeros = [z for z in data["zeros"] if z["run"] in truncated]
    assert zeros and all(z["t"] == list(range(20)) for z in zeros if z["series"] == "hidden")
    marks = frame.locator("path.gf-zero").count()
    assert marks == sum(len(z["t"]) for z in data["zeros"])
    assert all((f["t0"], f["t1"]) == (20, 29) for f in data["fits"] if f["run"] in truncated)
    _screenshot(page, tmp_path, "gradient_flow_sweep", readme=True)

    frame.locator("#gf-filter").fill("tbptt.chunk=10")  # filtering shows 4 runs; clearing them drops lines
    assert frame.locator("#gf-run-list li").count() == 4
    frame.locator("#gf-none").click()
    frame.wait_for_function("window.gradientFlow.ready && window.gradientFlow.lines.length === 6")


def test_three_layer_lstm_draws_h_and_c_per_layer(browser, tensorboard, logs, tmp_path):
    server = tensorboard(logs["deep"])
    server.wait(expect_runs=1)
    page, frame = _open_tab(browser, server)
    data = _page_data(frame)
    drawn = sorted((line["layer"], line["series"]) for line in data["lines"])
    assert drawn == [(f"layer{i}", s) for i in range(3) for s in ("cell", "hidden")]
    _assert_lines_are_the_records(data["lines"], _tb_run_dirs(logs["deep"]), None)
    # One run: a colour per layer, shared by its h and c lines.
    strokes = frame.eval_on_selector_all(
        "path.gf-line", "els => els.map(e => [e.dataset.layer, e.getAttribute('stroke')])"
    )
    assert data["colourBy"] == "layer" and len({colour for _, colour in strokes}) == 3
    assert all(len({c for layer, c in strokes if layer == name}) == 1 for name, _ in strokes)
    frame.locator("#gf-heatmap-layer").select_option("layer2")
    frame.wait_for_function("window.gradientFlow.heatmap && window.gradientFlow.heatmap.layer === 'layer2'")
    _screenshot(page, tmp_path, "gradient_flow_lstm_3_layers", readme=True)


@pytest.mark.parametrize("content", ["empty", "malformed"])
def test_empty_or_malformed_logdir_shows_a_message(browser, tensorboard, tmp_path, content):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    if content == "malformed":  # a run dir whose event file is garbage
        run = logdir / "runs" / "broken"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (run / "tb").mkdir()
        (run / "tb" / "events.out.tfevents.1.host").write_bytes(b"\x00garbage, not a TFRecord" * 40)
    server = tensorboard(logdir)
    server.ready()
    page, frame = _open_tab(browser, server)
    message = frame.locator("#gf-message")
    assert message.is_visible()
    expected = "No runs under" if content == "empty" else "no gradient-flow profile records"
    assert expected in message.inner_text()
    assert frame.locator("path.gf-line").count() == 0
    _screenshot(page, tmp_path, f"{content}_logdir")


def test_time_series_opens_on_the_headline_through_the_summary_link(browser, tensorboard, logs, tmp_path):
    """The link a run's summary prints pins loss and each layer's log10_ratio as the first cards."""
    from rnnflow.runtime.summary import headline_url

    server = tensorboard(logs["deep"])
    server.wait(expect_runs=1)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(headline_url(["layer0", "layer1", "layer2"], server.url))
    expected = ["train/loss", "val/loss", *(f"grad_flow/layer{i}/log10_ratio" for i in range(3))]
    page.wait_for_function(
        "n => document.querySelectorAll('card-view .heading .name').length >= n", arg=5, timeout=240_000
    )
    titles = page.eval_on_selector_all("card-view .heading .name", "els => els.map(e => e.innerText)")
    assert [title.replace("\n", "") for title in titles[:5]] == expected
    groups = page.eval_on_selector_all(".group-name, card-group-name", "els => els.map(e => e.innerText)")
    assert not any(group.strip().startswith("epoch") for group in groups)  # no flat epoch card
    _screenshot(page, tmp_path, "time_series_headline")


def test_verdict_reads_in_the_text_tab(browser, tensorboard, logs, tmp_path):
    """The end-of-run verdict, one line per layer and one on the loss, in TensorBoard's Text tab."""
    logged = (logs["single"] / "runs" / "rnn" / "train.log").read_text()
    block = logged.split("verdict (rules: rnnflow.report.verdict.RULES):\n", 1)[1].splitlines()
    expected = [line.strip() for line in block[:2]]
    assert expected[0].startswith("layer0: ") and expected[1].startswith("loss: ")
    server = tensorboard(logs["single"])
    server.wait(expect_runs=1)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{server.url}/#text")
    item = page.locator("li", has_text=expected[0][:40]).first
    item.wait_for(timeout=240_000)
    shown = page.locator("li").all_inner_texts()
    for line in expected:  # rendered from Markdown: the escapes are gone, the text is the log's
        assert line in [text.strip() for text in shown], (line, shown)
    _screenshot(page, tmp_path, "verdict_text_tab", readme=True)
