"""The "Gradient Flow" tab: rnnflow's full-resolution profiles, served by ``tensorboard --logdir``.

TensorBoard finds this plugin through the ``tensorboard_plugins`` entry point of the rnnflow
package; it needs no flag and no extra server. Its frontend (``static/index.js``, an ES
module TensorBoard loads into an iframe) asks these JSON routes under
``/data/plugin/gradient_flow/``:

* ``runs``: every TensorBoard run with profile records: its run directory, the swept config
  (the Hydra override keys whose values differ between runs, all of them for a single run),
  its layers and series and its probe steps. With no such run: a message saying what was found.
* ``profiles?run=R&run=…&step=S``: per run, the record at the latest probe step ≤ S of every
  layer (S absent: the latest): each series' values over t, the time steps where it is
  exactly 0, the fitted decay line ``n̂_end · α^(T-1-t)`` (:func:`rnnflow.probes.profile_stats.decay_fit`)
  with the range of t it was fitted on (the steps with ``0 < n_t < ∞``), and for a vanilla RNN
  the linear-regime line ``n_{T-1} · ρ^(T-1-t)`` with ρ the logged spectral radius of W_hh at
  that step.
* ``heatmap?run=R&layer=L&series=hidden``: one series of one layer over (training step, t).

Data come from the event files, not from TensorBoard's sampled tensor store (which keeps 10
tensors per tag unless ``--samples_per_plugin`` says otherwise): TensorBoard's data provider
tells which runs have profile records, and one :class:`rnnflow.report.profiles.ProfileReader`
per run reads its files incrementally (only what was appended since the last request).
"""

from __future__ import annotations

import math
import mimetypes
import os
import posixpath
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from rnnflow.report.profiles import HYDRA_CONFIG, PLUGIN_NAME, ProfileReader, RunProfiles

STATIC = Path(__file__).parent / "static"
RADIUS_TAG = re.compile(r"^spectral/(.+)/radius$")
# Above this many event directories the "nothing found" scan stops looking (a huge logdir).
SCAN_LIMIT = 10_000


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """A JSON-safe list: NaN and ±inf become null (JSON has no such numbers)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def decay_line(values: np.ndarray) -> dict[str, float] | None:
    """The least-squares decay fit of a profile and the range of t it was fitted on; None if < 2 points."""
    import torch  # the one implementation of the fit; imported on first use (TensorBoard starts fast)

    from rnnflow.probes.profile_stats import decay_fit

    valid = np.flatnonzero((values > 0) & np.isfinite(values))
    if valid.size < 2:
        return None
    alpha, end = (float(v) for v in decay_fit(torch.from_numpy(np.asarray(values, dtype=np.float64))))
    if not (math.isfinite(alpha) and math.isfinite(end) and alpha > 0 and end > 0):
        return None
    return {"alpha": alpha, "end": end, "t0": int(valid[0]), "t1": int(valid[-1]), "length": int(values.size)}


def _import_fit() -> None:
    import rnnflow.probes.profile_stats  # noqa: F401


def run_dir_of(event_dir: Path, logdir: Path) -> Path:
    """The run directory (holding ``.hydra/config.yaml``) an event directory belongs to, else itself."""
    for candidate in (event_dir, *event_dir.parents):
        if (candidate / HYDRA_CONFIG).is_file():
            return candidate
        if candidate == logdir:
            break
    return event_dir


def read_overrides(run_dir: Path) -> dict[str, str]:
    """The Hydra overrides of a run (``key -> value``), {} if none or unreadable."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        lines = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    overrides = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        overrides[key.lstrip("+")] = value
    return overrides


def swept_config(overrides: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per run, the override keys whose values differ between the runs (all keys for one run)."""
    keys: list[str] = []
    for run_overrides in overrides.values():
        keys += [key for key in run_overrides if key not in keys]
    if len(overrides) > 1:
        keys = [key for key in keys if len({o.get(key, "") for o in overrides.values()}) > 1]
    return {run: {key: o[key] for key in keys if key in o} for run, o in overrides.items()}


class _RunReader:
    """One TensorBoard run's profiles and spectral radii, read incrementally from its own event files."""

    def __init__(self, event_dir: Path) -> None:
        self.reader = ProfileReader(event_dir, recursive=False, scalar_tags=RADIUS_TAG)
        self.lock = threading.Lock()

    def update(self) -> tuple[RunProfiles, dict[str, dict[int, float]]]:
        with self.lock:
            profiles = self.reader.update()
            return profiles, self.reader.scalars


class GradientFlowPlugin(base_plugin.TBPlugin):
    """TensorBoard plugin: the "Gradient Flow" tab (see the module docstring)."""

    plugin_name = "gradient_flow"

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        self._logdir = Path(context.logdir).resolve() if context.logdir else None
        self._readers: dict[str, _RunReader] = {}
        self._lock = threading.Lock()
        # The decay fit needs torch, whose import takes seconds: do it now, beside TensorBoard's
        # start-up, rather than in the first request of the tab.
        threading.Thread(target=_import_fit, daemon=True).start()

    # TensorBoard's plugin interface -------------------------------------------------------

    def get_plugin_apps(self) -> dict[str, Any]:
        return {
            "/runs": self._serve_runs,
            "/profiles": self._serve_profiles,
            "/heatmap": self._serve_heatmap,
            "/static/*": self._serve_static,
        }

    def is_active(self) -> bool:
        # Listed even without data, so that the tab can say what it found instead of vanishing.
        return self._logdir is not None

    def data_plugin_names(self) -> tuple[str, ...]:
        return (PLUGIN_NAME,)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Gradient Flow")

    # Data ---------------------------------------------------------------------------------

    def _profile_runs(self, request: wrappers.Request) -> list[str]:
        """TensorBoard runs that hold profile records (known to TensorBoard's data provider)."""
        if self._data_provider is None:
            return []
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        listing = self._data_provider.list_tensors(ctx, experiment_id=experiment, plugin_name=PLUGIN_NAME)
        return sorted(listing, key=_natural_key)

    def _event_dir(self, run: str) -> Path:
        assert self._logdir is not None
        path = (self._logdir / run).resolve()
        if path != self._logdir and self._logdir not in path.parents:
            raise ValueError(f"run outside the logdir: {run!r}")
        return path

    def _reader(self, run: str) -> _RunReader:
        with self._lock:
            reader = self._readers.get(run)
            if reader is None:
                reader = self._readers[run] = _RunReader(self._event_dir(run))
            return reader

    def runs_impl(self, request: wrappers.Request) -> dict[str, Any]:
        if self._logdir is None:
            return {"runs": [], "message": "TensorBoard was started without --logdir: no runs to read."}
        runs = self._profile_runs(request)
        if not runs:
            return {"runs": [], "logdir": str(self._logdir), "message": self._nothing_found_message()}
        run_dirs = {run: run_dir_of(self._event_dir(run), self._logdir) for run in runs}
        config = swept_config({run: read_overrides(path) for run, path in run_dirs.items()})
        listed, problems = [], []
        for run in runs:
            try:
                profiles, _ = self._reader(run).update()
            except (ValueError, OSError) as error:
                problems.append(f"{run}: cannot read its profile records ({error})")
                continue
            if not len(profiles):
                continue
            steps = sorted({int(s) for layer in profiles.layers for s in profiles.steps(layer)})
            listed.append(
                {
                    "run": run,
                    "dir": _relative(run_dirs[run], self._logdir),
                    "config": config[run],
                    "layers": profiles.layers,
                    "series": {layer: profiles.series_names(layer) for layer in profiles.layers},
                    "steps": steps,
                }
            )
        message = None if listed else "No run with readable gradient-flow profiles. " + " ".join(problems)
        return {"runs": listed, "logdir": str(self._logdir), "problems": problems, "message": message}

    def _nothing_found_message(self) -> str:
        """Say what the logdir holds when no run has profile records."""
        assert self._logdir is not None
        run_dirs, event_files = 0, 0
        for index, (_, dirs, files) in enumerate(os.walk(self._logdir)):
            run_dirs += ".hydra" in dirs
            event_files += sum(name.startswith("events.out.tfevents") for name in files)
            if index > SCAN_LIMIT:
                break
        if not run_dirs and not event_files:
            return (
                f"No runs under {self._logdir}. Train one (python scripts/train.py) and point "
                "tensorboard --logdir at its logs directory."
            )
        return (
            f"Found {run_dirs} run director{'y' if run_dirs == 1 else 'ies'} and {event_files} event "
            f"file{'' if event_files == 1 else 's'} under {self._logdir}, but no gradient-flow profile "
            "records: the runs were trained with diagnostics.every_n_steps=null, by an rnnflow that did "
            "not write profiles, or their event files are damaged (TensorBoard may still be loading them; "
            "reload in a few seconds)."
        )

    def profiles_impl(self, runs: list[str], step: int | None) -> dict[str, Any]:
        result = []
        for run in runs:
            profiles, scalars = self._reader(run).update()
            result.append({"run": run, **self._run_profiles(profiles, scalars, step)})
        return {"step": step, "runs": result}

    @staticmethod
    def _run_profiles(
        profiles: RunProfiles, scalars: dict[str, dict[int, float]], step: int | None
    ) -> dict[str, Any]:
        layers = []
        for layer in profiles.layers:
            steps = profiles.steps(layer)
            if not steps.size:
                continue
            chosen = steps[steps <= step] if step is not None else steps
            at = int(chosen[-1]) if chosen.size else int(steps[0])
            record = profiles.at(layer, at)
            series = []
            for name, values in record.series.items():
                entry = {
                    "name": name,
                    "label": record.labels.get(name, name),
                    "values": _finite_or_none(values),
                    "zeros": np.flatnonzero(values == 0).tolist(),
                    "fit": decay_line(values) if name in ("hidden", "cell") else None,
                    "theory": None,
                }
                radius = scalars.get(f"spectral/{layer}/radius", {}).get(at)
                if name == "hidden" and radius is not None and values.size and values[-1] > 0:
                    entry["theory"] = {
                        "rho": float(radius),
                        "end": float(values[-1]),
                        "length": int(values.size),
                    }
                series.append(entry)
            layers.append({"layer": layer, "step": at, "series": series})
        return {"layers": layers}

    def heatmap_impl(self, run: str, layer: str, series: str) -> dict[str, Any]:
        profiles, _ = self._reader(run).update()
        steps, values = profiles.matrix(layer, series)
        return {
            "run": run,
            "layer": layer,
            "series": series,
            "steps": steps.tolist(),
            "length": int(values.shape[1]) if values.ndim == 2 else 0,
            "values": [_finite_or_none(row) for row in values],
        }

    # Routes -------------------------------------------------------------------------------

    @wrappers.Request.application
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        return http_util.Respond(request, self.runs_impl(request), "application/json")

    @wrappers.Request.application
    def _serve_profiles(self, request: wrappers.Request) -> wrappers.Response:
        step = request.args.get("step")
        try:
            body = self.profiles_impl(request.args.getlist("run"), int(step) if step else None)
        except ValueError as error:
            return http_util.Respond(request, {"error": str(error)}, "application/json", code=400)
        return http_util.Respond(request, body, "application/json")

    @wrappers.Request.application
    def _serve_heatmap(self, request: wrappers.Request) -> wrappers.Response:
        args = request.args
        try:
            body = self.heatmap_impl(args.get("run", ""), args.get("layer", ""), args.get("series", "hidden"))
        except ValueError as error:
            return http_util.Respond(request, {"error": str(error)}, "application/json", code=400)
        return http_util.Respond(request, body, "application/json")

    @wrappers.Request.application
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        name = posixpath.normpath(request.path.split("/static/", 1)[-1])
        path = STATIC / name
        if name.startswith(("..", "/")) or not path.is_file():
            return http_util.Respond(request, "Not found", "text/plain", code=404)
        mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            mimetype = "text/javascript"
        return http_util.Respond(request, path.read_bytes(), mimetype)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
