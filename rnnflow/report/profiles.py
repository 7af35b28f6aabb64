"""Full-resolution per-step profiles in the event file: the format, the writer and the loader.

A *profile* is a vector over the time steps ``t = 0 … T-1`` of one layer's sequence at one
training step, e.g. ``n_t = ‖∂L/∂h_t‖_F`` (Frobenius norm over batch and hidden units of the
total gradient of the batch loss with respect to the layer's hidden state ``h_t``), the
LSTM cell state's ``‖∂L/∂c_t‖_F``, or any other named per-step series an instrument adds.

Format (version 1). One TensorBoard *tensor summary* per probe, per layer and per instrument:

* tag: ``<group>/<layer>/profile`` (``grad_flow/layer0/profile``; the tag only needs to be
  unique per instrument and layer, the loader does not parse it);
* value: a float64 tensor of shape ``(S, T)``: row ``s`` is the series ``series[s]``;
* ``SummaryMetadata.plugin_data``: ``plugin_name = PLUGIN_NAME``, ``content`` = UTF-8 JSON
  ``{"version": 1, "layer": "layer0", "series": ["hidden", "cell"], "labels": {...}}``
  written with every record (so that a reader needs no other record to decode one).

float64 keeps every value a float32 backward produces (gradients of 1e-30 and below, exact
zeros stay zero). Size: ``8·S·T`` bytes of payload plus 200–300 bytes of framing, tag and
metadata per record (:func:`record_bytes`): the default run (LSTM, T = 50, hidden and cell,
a probe every 100 of 2000 steps) stores 21 records of 1,065 bytes, 22 kB; a 3-layer LSTM at
T = 1000 over 10,000 steps 303 records of 16.3 kB, 4.9 MB.

:func:`load_profiles` reads every record of a run back (several event files, e.g. after a
resume, are read in name order; a later record for the same layer, step and series wins)
into :class:`RunProfiles`. :class:`ProfileReader` does the same incrementally (the
TensorBoard plugin keeps one per run and reads only what was appended since).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import DATA_CLASS_TENSOR, Summary, SummaryMetadata
from tensorboard.util import tensor_util

if TYPE_CHECKING:
    from rnnflow.report.runs import Run

PLUGIN_NAME = "rnnflow_profiles"
FORMAT_VERSION = 1
EVENT_GLOB = "events.out.tfevents.*"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"

# Human labels of the series rnnflow writes (others fall back to their name).
LABELS = {"hidden": "‖∂L/∂h_t‖", "cell": "‖∂L/∂c_t‖"}


def profile_tag(group: str, layer: str) -> str:
    """The tag of ``layer``'s profile record written by the instrument ``group``."""
    return f"{group}/{layer}/profile"


def profile_summary(
    tag: str, layer: str, series: Mapping[str, np.ndarray], labels: Mapping[str, str] | None = None
) -> Summary:
    """A :class:`Summary` of the named ``(T,)`` vectors ``series`` of ``layer`` as one ``(S, T)`` tensor.

    Raises ``ValueError`` if there is no series or they differ in length.
    """
    if not series:
        raise ValueError(f"profile {tag!r}: no series")
    rows = [np.asarray(values, dtype=np.float64).reshape(-1) for values in series.values()]
    lengths = {row.size for row in rows}
    if len(lengths) != 1:
        sizes = {name: row.size for name, row in zip(series, rows, strict=True)}
        raise ValueError(f"profile {tag!r}: series of different lengths {sizes}")
    names = list(series)
    content = {
        "version": FORMAT_VERSION,
        "layer": layer,
        "series": names,
        "labels": {name: (labels or {}).get(name, LABELS.get(name, name)) for name in names},
    }
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=json.dumps(content).encode()),
        data_class=DATA_CLASS_TENSOR,  # TensorBoard's data provider lists only values of a known class
    )
    tensor = tensor_util.make_tensor_proto(np.stack(rows))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


def write_profiles(
    writer: Any,
    group: str,
    layer: str,
    step: int,
    series: Mapping[str, np.ndarray],
    labels: Mapping[str, str] | None = None,
) -> None:
    """Append one record (``layer``'s ``series`` at training ``step``) to a ``SummaryWriter``'s event file.

    ``SummaryWriter`` has no public call for a tensor summary with plugin metadata (its own
    ``add_custom_scalars`` goes through the file writer the same way).
    """
    summary = profile_summary(profile_tag(group, layer), layer, series, labels)
    writer._get_file_writer().add_summary(summary, int(step))


def record_bytes(series: list[str], length: int, layer: str = "layer0", group: str = "grad_flow") -> int:
    """Bytes one record of ``series`` (names), ``length`` time steps, takes in the event file."""
    summary = profile_summary(profile_tag(group, layer), layer, {name: np.zeros(length) for name in series})
    event = Event(wall_time=1.7e9, step=10**6, summary=summary)
    return len(event.SerializeToString()) + 16  # TFRecord framing: length (8) and two CRCs (4 + 4)


@dataclass(frozen=True)
class ProfileRecord:
    """One layer at one training step.

    Attributes:
        step: training step (the batch index every rnnflow tag is written at).
        layer: ``layer0``, ``layer1``, … (``<module>/layer0`` for other models).
        series: name -> ``(T,)`` float64 vector over the time steps t (``hidden`` = ‖∂L/∂h_t‖,
            ``cell`` = ‖∂L/∂c_t‖, and any series another instrument wrote for this layer and step).
        labels: name -> a human label (``‖∂L/∂h_t‖``).
        wall_time: seconds since the epoch when the (last) record was written.
    """

    step: int
    layer: str
    series: dict[str, np.ndarray]
    labels: dict[str, str] = field(default_factory=dict)
    wall_time: float = math.nan

    @property
    def length(self) -> int:
        """T, the number of time steps."""
        return next(iter(self.series.values())).size


@dataclass
class RunProfiles:
    """Every profile record of one run, by layer and step (``records[layer][step]``)."""

    records: dict[str, dict[int, ProfileRecord]] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return sorted(self.records, key=_natural_key)

    def steps(self, layer: str) -> np.ndarray:
        """The training steps that have a record of ``layer``, sorted."""
        return np.array(sorted(self.records.get(layer, {})), dtype=np.int64)

    def series_names(self, layer: str) -> list[str]:
        """Every series name ``layer`` has at some step (first-seen order)."""
        names: dict[str, None] = {}
        for record in self.records.get(layer, {}).values():
            names.update(dict.fromkeys(record.series))
        return list(names)

    def at(self, layer: str, step: int | None = None) -> ProfileRecord | None:
        """The record of ``layer`` at ``step`` (None: the latest), or None if there is none."""
        by_step = self.records.get(layer, {})
        if not by_step:
            return None
        return by_step.get(max(by_step) if step is None else int(step))

    def matrix(self, layer: str, name: str = "hidden") -> tuple[np.ndarray, np.ndarray]:
        """``(steps (P,), values (P, T_max))`` of one series over training.

        Rows of a shorter T (variable-length tasks, left-padded) are aligned at their last
        step and padded with NaN on the left; a step without this series is a NaN row.
        """
        steps = self.steps(layer)
        rows = [self.records[layer][int(step)].series.get(name) for step in steps]
        width = max((row.size for row in rows if row is not None), default=0)
        values = np.full((steps.size, width), np.nan)
        for index, row in enumerate(rows):
            if row is not None and row.size:
                values[index, width - row.size :] = row
        return steps, values

    def __len__(self) -> int:
        return sum(len(by_step) for by_step in self.records.values())

    def add(self, record: ProfileRecord) -> None:
        """Merge ``record``: series of the same layer and step from several records are united."""
        by_step = self.records.setdefault(record.layer, {})
        old = by_step.get(record.step)
        if old is not None:
            record = ProfileRecord(
                step=record.step,
                layer=record.layer,
                series={**old.series, **record.series},
                labels={**old.labels, **record.labels},
                wall_time=max(old.wall_time, record.wall_time),
            )
        by_step[record.step] = record


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def decode(value: Summary.Value, step: int, wall_time: float) -> ProfileRecord | None:
    """The record in a summary value, or None if it is not an rnnflow profile.

    Raises ``ValueError`` for a profile record it cannot decode (unknown version, bad shape).
    """
    if value.metadata.plugin_data.plugin_name != PLUGIN_NAME:
        return None
    content = json.loads(value.metadata.plugin_data.content.decode() or "{}")
    if content.get("version") != FORMAT_VERSION:
        raise ValueError(f"profile {value.tag!r}: unknown format version {content.get('version')!r}")
    array = tensor_util.make_ndarray(value.tensor).astype(np.float64, copy=False)
    names = list(content.get("series", []))
    if array.ndim != 2 or array.shape[0] != len(names):
        raise ValueError(f"profile {value.tag!r}: shape {array.shape} does not match series {names}")
    return ProfileRecord(
        step=int(step),
        layer=str(content.get("layer", value.tag)),
        series={name: array[index] for index, name in enumerate(names)},
        labels=dict(content.get("labels", {})),
        wall_time=float(wall_time),
    )


def event_files(run_dir: str | Path) -> list[Path]:
    """The event files of a run directory, in name (= creation time) order.

    Files inside a nested run directory (one holding ``.hydra/config.yaml``) belong to it,
    not to ``run_dir``.
    """
    run_dir = Path(run_dir)
    found = []
    for path in run_dir.rglob(EVENT_GLOB):
        between = path.relative_to(run_dir).parents
        if not any((run_dir / part / HYDRA_CONFIG).is_file() for part in between if part != Path(".")):
            found.append(path)
    return sorted(found, key=lambda path: (path.name, str(path)))


class ProfileReader:
    """Reads a run's profile records incrementally: :meth:`update` reads what was appended since.

    ``run_dir``: a run directory (its event files, ``recursive``: also in subdirectories that
    are not run directories themselves), or a single event file. ``scalar_tags``: scalar
    tags matching it are kept too, in :attr:`scalars` (``tag -> {step: value}``).

    The event files are scanned by hand rather than with TensorBoard's ``EventFileLoader``:
    that one parses every event in Python (a 10,000-step default run's 5 MB file took 12 s on
    a loaded 2-core machine), while a profile record is recognised in the raw bytes by its
    plugin name and only those records (and scalars whose tag bytes match) are parsed. TFRecord
    framing: ``uint64 length, uint32 masked CRC of the length, data, uint32 masked CRC of the data``
    (little endian). CRCs are not checked; a record that does not parse is skipped, and an
    incomplete last record (a file being written) is read again at the next :meth:`update`.
    """

    def __init__(
        self, run_dir: str | Path, recursive: bool = True, scalar_tags: re.Pattern[str] | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.recursive = recursive
        self.scalar_tags = scalar_tags
        self.profiles = RunProfiles()
        self.scalars: dict[str, dict[int, float]] = {}
        self._offsets: dict[Path, int] = {}
        self.skipped = 0  # records that looked like ours but did not parse

    def _files(self) -> list[Path]:
        if self.run_dir.is_file():
            return [self.run_dir]
        if not self.recursive:
            return sorted(path for path in self.run_dir.glob(EVENT_GLOB) if path.is_file())
        return event_files(self.run_dir)

    def _records(self, path: Path) -> Iterator[bytes]:
        """The complete records of ``path`` appended since the last call."""
        offset = self._offsets.get(path, 0)
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        position, size = 0, len(data)
        while position + 12 <= size:
            length = int.from_bytes(data[position : position + 8], "little")
            end = position + 12 + length + 4
            if end > size:
                break
            yield data[position + 12 : position + 12 + length]
            position = end
        self._offsets[path] = offset + position

    def update(self) -> RunProfiles:
        """Read new records; returns :attr:`profiles` (updated in place)."""
        marker = PLUGIN_NAME.encode()
        scalar_marker = _literal_prefix(self.scalar_tags.pattern).encode() if self.scalar_tags else None
        for path in self._files():
            for data in self._records(path):
                ours = marker in data
                if not ours and (scalar_marker is None or scalar_marker not in data):
                    continue  # neither a profile record nor a wanted scalar (b"" is in every record)
                try:
                    event = Event.FromString(data)
                except DecodeError:
                    self.skipped += ours
                    continue
                self._add(event)
        return self.profiles

    def _add(self, event: Event) -> None:
        wanted = self.scalar_tags
        for value in event.summary.value:
            try:
                record = decode(value, event.step, event.wall_time)
            except (ValueError, UnicodeDecodeError):
                self.skipped += 1
                continue
            if record is not None:
                self.profiles.add(record)
            elif wanted is not None and value.HasField("simple_value") and wanted.match(value.tag):
                self.scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)


def _literal_prefix(pattern: str) -> str:
    """The literal text a regular expression starts with (``^spectral/(.+)`` -> ``spectral/``)."""
    prefix = re.match(r"\^?([\w/-]*)", pattern)  # stops at the first metacharacter ("." too)
    return prefix.group(1) if prefix else ""


def load_profiles(run_dir: str | Path) -> RunProfiles:
    """Every profile record of the run at ``run_dir`` (a run directory or one event file).

    ``load_profiles(d).at("layer0", 0).series["hidden"]`` is ‖∂L/∂h_t‖ of layer 0 at step 0,
    ``(T,)`` float64. An empty :class:`RunProfiles` if the run wrote none.
    """
    return ProfileReader(run_dir).update()


# The report's view of a run's profiles: layers by index (``layer<N>``), as its table and figures use.

LAYER_NAME = re.compile(r"^layer(\d+)$")


@dataclass
class ProfileMatrix:
    """``norms`` ``(P, T)``: ‖∂L/∂h_t‖ at training steps ``train_steps`` (P) and time steps ``t`` (T)."""

    train_steps: np.ndarray
    t: np.ndarray
    norms: np.ndarray


def profile_layers(run: Run) -> list[int]:
    """The indices N of the layers ``layer<N>`` that have profile records in ``run``."""
    return sorted(int(match.group(1)) for layer in run.profiles.layers if (match := LAYER_NAME.match(layer)))


def profile_matrix(run: Run, layer: int, name: str = "hidden") -> ProfileMatrix | None:
    """Every probe of ``layer<layer>`` as a matrix (rows: probes); None if it has none."""
    steps, values = run.profiles.matrix(f"layer{layer}", name)
    if not steps.size or not values.size:
        return None
    return ProfileMatrix(train_steps=steps, t=np.arange(values.shape[1]), norms=values)


def profile_at(
    run: Run, layer: int, which: str, name: str = "hidden"
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """``(training step, t, norms)`` of the first (``which="init"``) or last (``"end"``) probe."""
    steps = run.profiles.steps(f"layer{layer}")
    if not steps.size:
        return None
    step = int(steps[{"init": 0, "end": -1}[which]])
    values = run.profiles.at(f"layer{layer}", step).series.get(name)
    if values is None:
        return None
    return step, np.arange(values.size), values
