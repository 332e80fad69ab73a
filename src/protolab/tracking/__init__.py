"""MLflow tracking: one experiment per study, a parent run per study, a child run per job."""

from protolab.tracking._mlflow import ChildRun, Tracker, default_tracking_uri, open_tracker, redact

__all__ = ["ChildRun", "Tracker", "default_tracking_uri", "open_tracker", "redact"]
