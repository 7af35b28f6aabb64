"""Reading runs back from their event files; tables and figures for a run or a sweep.

* :mod:`rnnflow.report.runs`: find run directories, read overrides, scalars and images;
* :mod:`rnnflow.report.profiles`: full-resolution profiles in the event file (format, writer,
  :func:`load_profiles`);
* :mod:`rnnflow.report.table`: the one-row-per-run table (CSV and Markdown);
* :mod:`rnnflow.report.plots`: the report's PNG figures;
* :mod:`rnnflow.report.figures`: gradient-flow figures shared with the TensorBoard callbacks;
* :mod:`rnnflow.report.build`: ``build_report(dir, out)``, used by ``scripts/report.py``.
"""

from rnnflow.report.profiles import ProfileRecord, RunProfiles, load_profiles

__all__ = ["ProfileRecord", "RunProfiles", "load_profiles"]
