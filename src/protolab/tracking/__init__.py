"""MLflow tracking: one experiment per study, a parent run per study, a child run per job."""

from protolab.tracking._mlflow import (
    ChildRun,
    Tracker,
    default_tracking_uri,
    open_tracker,
    redact,
    wait_open,
)
from protolab.tracking._notes import FAMILY_VIEW, store_study_notes
from protolab.tracking._pool import WriterPool, adopt_writer
from protolab.tracking._study_id import StudyRuns
from protolab.tracking._types import DescribeStudy, StudyNotes
from protolab.tracking._types import Tracker as TrackerProtocol
from protolab.tracking._writer import AsyncChildRun, AsyncTracker, start_writer

__all__ = [
    "FAMILY_VIEW",
    "AsyncChildRun",
    "AsyncTracker",
    "ChildRun",
    "DescribeStudy",
    "StudyNotes",
    "StudyRuns",
    "Tracker",
    "TrackerProtocol",
    "WriterPool",
    "adopt_writer",
    "default_tracking_uri",
    "open_tracker",
    "redact",
    "start_writer",
    "store_study_notes",
    "wait_open",
]
