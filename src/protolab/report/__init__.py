"""``protolab report``: which family is faster for this model, when compile pays back, Pareto.

Reads a finished (or running) study from its Optuna storage and MLflow runs; writes tables,
PNGs, ``report.md`` and ``report.json``, and logs them to the study's MLflow parent run.
Importing this package loads neither MLflow, Optuna nor matplotlib: they load on use.
"""

from protolab.report._compare import (
    ArchComparison,
    PairComparison,
    RunRecord,
    Summary,
    break_even_steps,
    by_architecture,
    format_break_even,
    pair_runs,
    pareto_front,
    summarise,
)
from protolab.report._data import (
    Objective,
    ReportData,
    Source,
    TrialRecord,
    load_report_data,
    objective_importances,
    param_importances,
    resolve_source,
)
from protolab.report._plots import SIZE_PX
from protolab.report._report import FRONT_PLOT, PLOTS, Report, build_report, run_report
from protolab.report._versions import Version, VersionChange, VersionSplit, split_by_version

__all__ = [
    "FRONT_PLOT",
    "PLOTS",
    "SIZE_PX",
    "ArchComparison",
    "Objective",
    "PairComparison",
    "Report",
    "ReportData",
    "RunRecord",
    "Source",
    "Summary",
    "TrialRecord",
    "Version",
    "VersionChange",
    "VersionSplit",
    "break_even_steps",
    "build_report",
    "by_architecture",
    "format_break_even",
    "load_report_data",
    "objective_importances",
    "pair_runs",
    "param_importances",
    "pareto_front",
    "resolve_source",
    "run_report",
    "split_by_version",
    "summarise",
]
