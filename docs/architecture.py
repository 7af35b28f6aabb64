"""Draw docs/images/architecture.png: rnnflow's folders, their files and who imports whom.

    python docs/architecture.py

Read from the code itself (``ast``): a box per folder of ``rnnflow/`` (and ``benchmarks/``,
``scripts/``) listing its modules with their line counts, an arrow from a folder to each folder it
imports from. Folders stand in layers: a folder is drawn below every folder that imports it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["scripts", "benchmarks", "runtime", "lit", "callbacks", "report", "probes", "models", "tasks"]
ROLE = {
    "scripts": "entry points",
    "benchmarks": "benchmark suite",
    "runtime": "run mechanics",
    "lit": "LightningModule, data",
    "callbacks": "one callback per instrument",
    "report": "reading runs back",
    "probes": "the math, pure torch",
    "models": "networks, init schemes",
    "tasks": "synthetic tasks",
}


def folder_of(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "rnnflow" and len(parts) > 2 else parts[0]


def imported_folders(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rnnflow" and len(parts) > 1 and parts[1] in FOLDERS:
                found.add(parts[1])
            elif parts[0] == "benchmarks":
                found.add("benchmarks")
    return found


def main() -> Path:
    files: dict[str, list[tuple[str, int]]] = defaultdict(list)
    edges: set[tuple[str, str]] = set()
    for folder in FOLDERS:
        base = ROOT / folder if folder in ("scripts", "benchmarks") else ROOT / "rnnflow" / folder
        for path in sorted(base.glob("*.py")):
            if path.name != "__init__.py":
                files[folder].append((path.stem, len(path.read_text().splitlines())))
            edges |= {(folder, target) for target in imported_folders(path) if target != folder}
    layer = {folder: 0 for folder in FOLDERS}
    for _ in FOLDERS:  # longest path from the top: a folder sits below every folder importing it
        for source, target in edges:
            layer[target] = max(layer[target], layer[source] + 1)
    rows: dict[int, list[str]] = defaultdict(list)
    for folder in FOLDERS:
        rows[layer[folder]].append(folder)
    figure, axes = plt.subplots(figsize=(13, 1.9 * len(rows) + 0.6), dpi=110)
    centres = {}
    width, height = 4.2, 1.45
    for row, folders in rows.items():
        y = -row * 1.9
        for index, folder in enumerate(folders):
            x = (index - (len(folders) - 1) / 2) * 4.7
            centres[folder] = (x, y)
            axes.add_patch(
                FancyBboxPatch(
                    (x - width / 2, y - height / 2),
                    width,
                    height,
                    boxstyle="round,pad=0.05",
                    facecolor="#e8f0fa",
                    edgecolor="#3b6ea5",
                    lw=1.2,
                )  # fmt: skip
            )
            total = sum(n for _, n in files[folder])
            axes.text(x, y + 0.52, f"{folder}/  ({total} lines)", ha="center", fontsize=9.5, weight="bold")
            axes.text(x, y + 0.3, ROLE[folder], ha="center", fontsize=7.5, style="italic", color="#444")
            listing = ", ".join(name for name, _ in files[folder])
            listing = _wrap(listing, 44)
            axes.text(x, y - 0.05, listing, ha="center", va="top", fontsize=6.8, family="monospace")
    for source, target in sorted(edges):
        (x0, y0), (x1, y1) = centres[source], centres[target]
        axes.add_patch(
            FancyArrowPatch(
                (x0, y0 - height / 2),
                (x1, y1 + height / 2),
                arrowstyle="-|>",
                mutation_scale=10,
                color="#777",
                lw=0.8,
                connectionstyle="arc3,rad=0.08",
            )  # fmt: skip
        )
    axes.set_xlim(-9.6, 9.6)
    axes.set_ylim(-1.9 * (len(rows) - 1) - 1.1, 1.1)
    axes.axis("off")
    axes.set_title("rnnflow: one concern per folder (arrow: imports from)", fontsize=11)
    out = ROOT / "docs" / "images" / "architecture.png"
    figure.savefig(out, bbox_inches="tight")
    return out


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if len(line) + len(word) > width:
            lines.append(line.rstrip())
            line = ""
        line += word + " "
    return "\n".join([*lines, line.rstrip()])


if __name__ == "__main__":
    print(main())
