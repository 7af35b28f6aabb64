"""How long the Gradient Flow tab's server side takes to load a long run, cold.

    python -m benchmarks.plugin_load <a real run dir> [--steps 10000] [--repeats 5]

Training 10,000 steps to get a 10,000-step event file takes long on a shared CPU, so the event
file is *extended* from a real run's: every event of the real run (any length ≥ a few hundred
steps, at the config to be measured, e.g. the default one) is written again at steps shifted by
multiples of the real run's length until ``--steps`` is reached (same tags, same record sizes,
same proportion of profile records, scalars, images and validation points as the real run).

Then, per repeat, a fresh plugin (no cache: the first request reads the whole file) answers the
three requests the tab makes when it opens: ``runs``, ``profiles`` (latest step) and ``heatmap``
(layer0, hidden). Reported: file size, probe records, and per request and in total the median
and the spread over the repeats, with the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from rnnflow.report.profiles import event_files, load_profiles


def extend_run(real_run: Path, out: Path, steps: int) -> Path:
    """Write ``out`` (a run dir) whose event file repeats ``real_run``'s events up to ``steps``."""
    events = [event for path in event_files(real_run) for event in EventFileLoader(str(path)).Load()]
    events = [event for event in events if event.HasField("summary")]
    # Whole probe intervals only (a multiple of 100 steps), so that the probe steps stay regular.
    length = max(100, (max(event.step for event in events) + 1) // 100 * 100)
    events = [event for event in events if event.step < length]
    shutil.copytree(real_run / ".hydra", out / ".hydra", dirs_exist_ok=True)
    writer = EventFileWriter(str(out / "tb"))
    for block in range(0, steps, length):
        for event in events:
            step = event.step + block
            if step >= steps:
                continue
            if _is_image(event) and event.step != 0:
                continue
            copy = type(event)()
            copy.CopyFrom(event)
            copy.step = step
            if _is_image(event) and step % 1000:
                continue
            writer.add_event(copy)
    writer.close()
    return out


def _is_image(event) -> bool:
    return any(value.HasField("image") for value in event.summary.value)


class _Listing:
    """The data provider's answer for one run (what TensorBoard itself would list)."""

    def __init__(self, run: str) -> None:
        self.run = run

    def list_tensors(self, ctx, *, experiment_id, plugin_name, run_tag_filter=None):
        return {self.run: {}}


def time_plugin(logdir: Path, run: str, repeats: int) -> dict[str, list[float]]:
    from tensorboard.plugins.base_plugin import TBContext
    from werkzeug.test import EnvironBuilder

    from rnnflow.tensorboard.plugin import GradientFlowPlugin

    times: dict[str, list[float]] = {"runs": [], "profiles": [], "heatmap": [], "total": []}
    for _ in range(repeats):
        plugin = GradientFlowPlugin(TBContext(logdir=str(logdir), data_provider=_Listing(run)))
        request = EnvironBuilder(path="/").get_request()
        request.environ["HTTP_X_TENSORBOARD_EXPERIMENT_ID"] = ""
        start = time.perf_counter()
        listing = plugin.runs_impl(request)
        mid = time.perf_counter()
        plugin.profiles_impl([run], None)
        mid2 = time.perf_counter()
        layer = listing["runs"][0]["layers"][0]
        plugin.heatmap_impl(run, layer, "hidden")
        end = time.perf_counter()
        times["runs"].append(mid - start)
        times["profiles"].append(mid2 - mid)
        times["heatmap"].append(end - mid2)
        times["total"].append(end - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a real run directory (holding .hydra/ and tb/)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        run_dir = extend_run(args.run, logdir / "long", args.steps)
        size = sum(path.stat().st_size for path in event_files(run_dir))
        profiles = load_profiles(run_dir)
        print(
            f"event file: {size / 1e6:.2f} MB, {len(profiles)} profile records, "
            f"probe steps {profiles.steps(profiles.layers[0])[[0, -1]].tolist()}"
        )
        start = time.perf_counter()
        import rnnflow.probes.profile_stats  # noqa: F401  (TensorBoard's start-up does this in a thread)

        seconds = time.perf_counter() - start
        print(f"import of the decay fit (torch), once at TensorBoard's start-up: {seconds:.2f} s")
        load = os.getloadavg()[0]
        times = time_plugin(logdir, "long/tb", args.repeats)
        for name, values in times.items():
            print(
                f"{name:>9}: median {statistics.median(values):.3f} s "
                f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} repeats)"
            )
        after = os.getloadavg()[0]
        print(f"load average (1 min) before / after: {load:.1f} / {after:.1f}, cores {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
