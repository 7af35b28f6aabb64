"""Reading runs back: find run directories, their Hydra overrides and their TensorBoard events.

A *run directory* is any directory holding ``.hydra/config.yaml`` (a single run
``logs/runs/<time>/`` or one job ``<sweep>/<num>_<overrides>/`` of a sweep). Its event
files are every ``events.out.tfevents.*`` below it (not below a nested run directory).

Scalars and the last image of each image tag are read with TensorBoard's own
``EventAccumulator`` (no tbparse/pandas needed at run time). A scalar series is a
:class:`Series` of steps, values and wall times; the run's wall time is the last event's
wall time minus the first's (the event file's version record, written when the logger opens).

A malformed run (an event "file" that is a directory or unreadable, an ``overrides.yaml`` that is
not a YAML list, a ``hydra.yaml`` that is not a mapping) raises :class:`MalformedRun` in
:func:`load_run`; :func:`load_runs` skips it with one warning line naming the run and why, so
that one broken job does not abort the report of a whole sweep.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnflow.report.profiles import RunProfiles, load_profiles

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
EVENT_GLOB = "events.out.tfevents.*"
log = logging.getLogger(__name__)


class MalformedRun(ValueError):
    """A run directory whose files cannot be read as a run; the message says which file and why."""


@dataclass
class Series:
    """One scalar tag: ``steps``, ``values`` and ``wall_times`` (seconds since the epoch), sorted by step."""

    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray

    @property
    def first(self) -> float:
        return float(self.values[0]) if self.values.size else float("nan")

    @property
    def last(self) -> float:
        return float(self.values[-1]) if self.values.size else float("nan")


@dataclass
class Run:
    """One run read back: where it is, its overrides (``key -> value``), scalars and last images.

    ``name`` is short: the path relative to the report root, a sweep job's directory
    ``<num>_<overrides>`` shortened to its job number ``<num>``; ``relative_path`` is the full one.
    """

    path: Path
    name: str
    relative_path: str
    overrides: dict[str, str]
    job_num: int | None = None
    scalars: dict[str, Series] = field(default_factory=dict, repr=False)
    images: dict[str, tuple[int, bytes]] = field(default_factory=dict, repr=False)  # tag -> (step, PNG)
    profiles: RunProfiles = field(default_factory=RunProfiles, repr=False)  # full-resolution profiles
    first_wall_time: float = float("nan")
    last_wall_time: float = float("nan")

    @property
    def wall_time(self) -> float:
        """Seconds from the first to the last event (NaN without events)."""
        return self.last_wall_time - self.first_wall_time

    def scalar(self, tag: str) -> Series | None:
        return self.scalars.get(tag)


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run directory at or below ``root`` (has ``.hydra/config.yaml``), in natural path order."""
    root = Path(root)
    found = {path.parent.parent for path in root.rglob("config.yaml") if path.parent.name == ".hydra"}
    if (root / HYDRA_CONFIG).is_file():
        found.add(root)
    return sorted(found, key=lambda path: _natural_key(str(path)))


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``["model=lstm", "+x=1", "~y"]`` -> ``{"model": "lstm", "x": "1", "~y": ""}`` (order kept)."""
    parsed: dict[str, str] = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        parsed[key.lstrip("+")] = value
    return parsed


def _read_yaml(path: Path, run_dir: Path) -> object:
    try:
        with path.open() as handle:
            return yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MalformedRun(f"{path.relative_to(run_dir)}: not readable as YAML ({reason})") from None


def _read_overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    lines = _read_yaml(path, run_dir)
    if lines is None:
        return {}
    if not isinstance(lines, list) or not all(isinstance(line, (str, int, float, bool)) for line in lines):
        raise MalformedRun(
            f".hydra/overrides.yaml: expected a YAML list of overrides, found {type(lines).__name__}"
        )
    return parse_overrides(lines)


def _mapping(node: object, where: str) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise MalformedRun(f".hydra/hydra.yaml: {where} is not a mapping ({type(node).__name__})")
    return node


def _job_num(run_dir: Path) -> int | None:
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_yaml.exists():
        return None
    document = _mapping(_read_yaml(hydra_yaml, run_dir), "the document")
    job = _mapping(_mapping(document.get("hydra"), "hydra").get("job"), "hydra.job")
    num = job.get("num")
    return int(num) if isinstance(num, int) else None


def _event_dirs(run_dir: Path) -> list[Path]:
    """Directories below ``run_dir`` holding event files, skipping those inside a nested run directory."""
    dirs = set()
    for event_file in run_dir.rglob(EVENT_GLOB):
        if not event_file.is_file():
            raise MalformedRun(f"{event_file.relative_to(run_dir)}: an event file that is not a file")
        between = event_file.relative_to(run_dir).parents  # "a/b/events..." -> a/b, a, .
        if not any((run_dir / part / HYDRA_CONFIG).is_file() for part in between if part != Path(".")):
            dirs.add(event_file.parent)
    return sorted(dirs)


def _load_events(run: Run, event_dir: Path) -> None:
    accumulator = EventAccumulator(str(event_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    try:
        accumulator.Reload()
    except Exception as error:  # noqa: BLE001 - TensorBoard's reader raises several types on bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MalformedRun(f"{event_dir.relative_to(run.path)}: unreadable event file ({reason})") from None
    tags = accumulator.Tags()
    last_times = []
    for tag in tags.get("scalars", []):
        events = sorted(accumulator.Scalars(tag), key=lambda event: (event.step, event.wall_time))
        series = Series(
            steps=np.array([event.step for event in events], dtype=np.int64),
            values=np.array([event.value for event in events], dtype=np.float64),
            wall_times=np.array([event.wall_time for event in events], dtype=np.float64),
        )
        run.scalars[tag] = series  # several event dirs: the later one wins (sorted dirs)
        last_times.append(series.wall_times.max(initial=-np.inf))
    for tag in tags.get("images", []):
        image = accumulator.Images(tag)[-1]
        run.images[tag] = (int(image.step), bytes(image.encoded_image_string))
        last_times.append(image.wall_time)
    try:
        first = accumulator.FirstEventTimestamp()
    except ValueError:  # an empty event file
        return
    run.first_wall_time = float(np.nanmin([run.first_wall_time, first]))
    run.last_wall_time = float(np.nanmax([run.last_wall_time, *last_times, first]))


def load_run(run_dir: str | Path, root: str | Path | None = None) -> Run:
    """Read one run directory: overrides, job number, scalars, the last image of each image tag.

    Raises :class:`MalformedRun` naming the file that cannot be read as a run's.
    """
    run_dir = Path(run_dir)
    overrides = _read_overrides(run_dir)
    job_num = _job_num(run_dir)
    relative = run_dir.relative_to(root) if root is not None and Path(root) != run_dir else Path(run_dir.name)
    name = relative.as_posix()
    if job_num is not None and relative.name.startswith(f"{job_num}_"):  # sweep job "<num>_<overrides>"
        name = (relative.parent / str(job_num)).as_posix()
    run = Run(
        path=run_dir, name=name, overrides=overrides, job_num=job_num, relative_path=relative.as_posix()
    )
    for event_dir in _event_dirs(run_dir):
        _load_events(run, event_dir)
    run.profiles = load_profiles(run_dir)
    return run


def load_runs(root: str | Path) -> list[Run]:
    """Every run at or below ``root``; sweep jobs in job-number order. Raises if there is none.

    A malformed run is skipped with one warning line naming it and why (:class:`MalformedRun`).
    """
    root = Path(root)
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise FileNotFoundError(f"no run directory (one holding {HYDRA_CONFIG}) at or below {root}")
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(load_run(run_dir, root))
        except MalformedRun as error:
            name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
            log.warning("skipping run %s: %s", name, error)
    if not runs:
        raise FileNotFoundError(f"no readable run at or below {root} ({len(run_dirs)} malformed, see above)")
    order = [(_natural_key(str(run.path.parent)), run.job_num or 0, _natural_key(run.name)) for run in runs]
    return [run for _, run in sorted(zip(order, runs, strict=True), key=lambda pair: pair[0])]
