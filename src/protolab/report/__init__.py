"""``protolab report``: every mode measured side by side, when compile pays back, Pareto.

Reads a finished (or running) study from its Optuna storage and MLflow runs (the
``protolab watch`` sessions in its experiment get a section of their own); writes tables,
PNGs, ``report.md`` and ``report.json``, and logs them to the study's MLflow parent run.
It also computes what the MLflow UI says about a study (:func:`study_notes`), which the
tracker stores when a sweep ends.
Importing this package loads neither MLflow, Optuna nor matplotlib: they load on use.
"""

from protolab.report._compare import RunRecord, break_even_steps, format_break_even, pareto_front
from protolab.report._data import (
    Objective,
    ReportData,
    Source,
    TrialRecord,
    load_report_data,
    objective_importances,
    param_importances,
    records_from_mlflow,
    resolve_source,
)
from protolab.report._intervals import Interval, Ratio, ratio_interval
from protolab.report._modes import (
    ArchRow,
    BreakEven,
    Comparison,
    Headline,
    Mode,
    Unit,
    compare_modes,
    format_seconds,
    mode_order,
    paired_units,
)
from protolab.report._parent import ParentNotes, StudyView, study_notes, write_study_notes
from protolab.report._plots import SIZE_PX, mode_colours
from protolab.report._report import (
    DEFAULT_UI_URL,
    FRONT_PLOT,
    PLOTS,
    Report,
    artifact_image_url,
    build_report,
    run_report,
    ui_base_url,
)
from protolab.report._versions import Version, VersionChange, VersionSplit, split_by_version
from protolab.report._watch import WatchMode, WatchSession, WatchVersion, summarize_watch
from protolab.report._watch_runs import WatchRun, WatchRuns, WatchSessionRun, watch_from_mlflow

__all__ = [
    "DEFAULT_UI_URL",
    "FRONT_PLOT",
    "PLOTS",
    "SIZE_PX",
    "ArchRow",
    "BreakEven",
    "Comparison",
    "Headline",
    "Interval",
    "Mode",
    "Objective",
    "ParentNotes",
    "Ratio",
    "Report",
    "ReportData",
    "RunRecord",
    "Source",
    "StudyView",
    "TrialRecord",
    "Unit",
    "Version",
    "VersionChange",
    "VersionSplit",
    "WatchMode",
    "WatchRun",
    "WatchRuns",
    "WatchSession",
    "WatchSessionRun",
    "WatchVersion",
    "artifact_image_url",
    "break_even_steps",
    "build_report",
    "compare_modes",
    "format_break_even",
    "format_seconds",
    "load_report_data",
    "mode_colours",
    "mode_order",
    "objective_importances",
    "paired_units",
    "param_importances",
    "pareto_front",
    "ratio_interval",
    "records_from_mlflow",
    "resolve_source",
    "run_report",
    "split_by_version",
    "study_notes",
    "summarize_watch",
    "ui_base_url",
    "watch_from_mlflow",
    "write_study_notes",
]
