"""``protolab watch``: a warm process that reruns a short job whenever the script is saved.

The frameworks stay imported and compiled programs stay cached between reruns, so an edit
to the experiment script, its config or a local module it imports shows its first loss in
about a second (``benchmarks/_watch.py`` measures it), with the change against the last
rerun and the study's best. Each rerun can be tracked in MLflow under one parent run per
session.
"""

from protolab.watch._loop import WatchOptions, watch

__all__ = ["WatchOptions", "watch"]
