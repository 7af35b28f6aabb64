"""Report on a run or a sweep: ``python scripts/report.py <run or sweep dir> [--out DIR]``.

Reads the TensorBoard event files of every run at or below the directory (a run directory
holds ``.hydra/config.yaml``) and writes, into ``--out`` (default ``<dir>/report/``):
``report.md`` (table and figures), ``runs.csv``, ``loss_curves.png``,
``grad_profiles_layerL.png`` and ``heatmaps/*.png``. See :mod:`rnnflow.report.build`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rnnflow.report.build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run or a sweep directory (searched recursively)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: <directory>/report)"
    )
    args = parser.parse_args(argv)
    # A malformed run is skipped with one warning line: "report: skipping run <name>: <why>".
    logging.basicConfig(format="report: %(message)s", level=logging.WARNING)
    if not args.directory.is_dir():
        print(f"report: not a directory: {args.directory}", file=sys.stderr)
        return 2
    try:
        report = build_report(args.directory, args.out)
    except FileNotFoundError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    text = report.read_text()
    for section in ("## Why it vanishes", "## Gradient through depth", "## Verdicts"):
        if section in text:  # print the explanatory tables and verdicts (up to the next section)
            body = text.split(section, 1)[1].split("\n## ", 1)[0]
            print(section + body.rstrip() + "\n")
    print(f"report: wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
