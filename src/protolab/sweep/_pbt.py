"""Population-based training, the sweep's part: one trial is one segment of one member.

The sampler (:class:`protolab.samplers.PBTSampler`) says which member a trial continues and
from which earlier trial's state. Here the state moves: before a segment trains on a mode,
that trial's state for the same mode is downloaded from the tracking store (the ``pbt/``
artifacts of its child run), so a member can continue on any worker or host that reaches
the store; after the segment, the job's final weights and optimizer state are uploaded as
its own run's ``pbt/`` artifacts, and the trial waits until they have landed before Optuna
hears it complete (another worker may start from it at once).

What a state file holds is each mode's business (``Program.save_state``/``load_state``:
formats that load without running code, as a tracking store is not trusted to hold code).
This state is not the ``checkpoint/`` kept for export: that one is pruned to the best
trials, while every segment's state may be inherited.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolab._tags import TAG
from protolab.sweep._callbacks import TrialCallback

if TYPE_CHECKING:
    from optuna.trial import Trial

    from protolab.backends import Job, JobResult
    from protolab.sweep._context import SweepContext
    from protolab.tracking._types import RunLog, Tracker

__all__ = ["STATE_TAG", "KeepState", "drop_copies", "pbt_job", "pbt_tags", "segment_epochs"]

ARTIFACT = "pbt"  # the child run's artifact folder holding the segment's final state
STATE_TAG = "protolab.pbt_state"  # "saved" once the state is in the store
_handed_over: set[Path] = set()  # save folders the writer uploads (and then deletes)


class StateMissing(RuntimeError):
    """The trial to continue from has no saved state for this mode in the store."""


def _attrs() -> Any:
    """The sampler's attr names (Optuna loads only when a sweep runs)."""
    import protolab.samplers as samplers

    return samplers


def is_pbt(trial: Trial | None) -> bool:
    """A trial of a study sampled by PBT (its member is recorded)."""
    return trial is not None and _attrs().MEMBER_ATTR in trial.user_attrs


def segment_epochs(ctx: SweepContext, trial: Trial | None) -> int:
    """Epochs this trial trains: all of ``train.epochs`` unless it is a PBT segment, which
    trains ``ready_epochs`` (less when its member has fewer left). The member's epochs
    after it, and whether that ends the member, are recorded on the trial for the sampler.
    """
    total = ctx.cfg.train.epochs
    if trial is None or not is_pbt(trial):
        return total
    s = _attrs()
    ready = int(getattr(trial.study.sampler, "ready_epochs", 1))
    source = trial.user_attrs.get(s.INHERITED_ATTR)
    before = 0 if source is None else int(_user_attr(trial, int(source), s.EPOCHS_ATTR, 0))
    epochs = max(1, min(ready, total - before))
    trial.set_user_attr(s.EPOCHS_ATTR, before + epochs)
    trial.set_user_attr(s.DONE_ATTR, before + epochs >= total)
    return epochs


def _user_attr(trial: Trial, number: int, key: str, default: int) -> Any:
    """A user attr of another trial of the study (``default`` if absent)."""
    source = trial.study.get_trials(deepcopy=False)
    found = next((t for t in source if t.number == number), None)
    return default if found is None else found.user_attrs.get(key, default)


def pbt_tags(trial: Trial | None) -> dict[str, str]:
    """The segment's place in the population as run tags (``inherited_from: tN``)."""
    if trial is None or not is_pbt(trial):
        return {}
    s, attrs = _attrs(), trial.user_attrs
    tags = {
        s.MEMBER_ATTR: str(attrs[s.MEMBER_ATTR]),
        s.GENERATION_ATTR: str(attrs.get(s.GENERATION_ATTR, 0)),
    }
    if s.INHERITED_ATTR in attrs:
        tags[s.INHERITED_ATTR] = f"t{attrs[s.INHERITED_ATTR]}"
        tags[s.EXPLOIT_ATTR] = str(bool(attrs.get(s.EXPLOIT_ATTR))).lower()
    return tags


def pbt_job(
    ctx: SweepContext, tracker: Tracker, trial: Trial | None, job: Job, mode: str, save: bool
) -> Job:
    """``job`` for ``mode`` as a PBT segment: starting from the inherited state (downloaded
    from the store) and saving its own (when ``save``: the first measurement)."""
    if trial is None or not is_pbt(trial):
        return job
    s = _attrs()
    source = trial.user_attrs.get(s.INHERITED_ATTR)
    start = None if source is None else _download(ctx, tracker, int(source), mode)
    out = Path(tempfile.mkdtemp(prefix="protolab-pbt-save-")) if save else None
    # a new shuffle order per generation: the same seed would replay the same epochs
    seed = job.train.seed + int(trial.user_attrs.get(s.GENERATION_ATTR, 0))
    return replace(job, train=replace(job.train, seed=seed), start_from=start, save_to=out)


def drop_copies(job: Job) -> None:
    """Delete a segment's downloaded state, and its own unless the writer took it over."""
    if job.start_from is not None:
        shutil.rmtree(job.start_from.parent, ignore_errors=True)
    if job.save_to is None:
        return
    if job.save_to in _handed_over:
        _handed_over.discard(job.save_to)  # the writer deletes it once uploaded
    else:
        shutil.rmtree(job.save_to, ignore_errors=True)


def _download(ctx: SweepContext, tracker: Tracker, source: int, mode: str) -> Path:
    """Trial ``source``'s saved state for ``mode``, from its child run's artifacts."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line a trial
    client = MlflowClient(ctx.tracking_uri)
    where = [
        f"tags.`{TAG.STUDY}` = '{ctx.study_name}'",
        f"tags.`{TAG.TRIAL}` = '{source}'",
        f"tags.`{TAG.BACKEND}` = '{mode}'",
        f"tags.`{STATE_TAG}` = 'saved'",
    ]
    if tracker.study_id:
        where.append(f"tags.`{TAG.STUDY_ID}` = '{tracker.study_id}'")
    runs = client.search_runs(
        [tracker.experiment_id],
        filter_string=" and ".join(where),
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        raise StateMissing(
            f"trial t{source} has no saved {mode} state in the tracking store "
            f"({ctx.tracking_uri}): the member cannot continue from it"
        )
    folder = Path(tempfile.mkdtemp(prefix="protolab-pbt-load-"))
    client.download_artifacts(runs[0].info.run_id, ARTIFACT, str(folder))
    return folder / ARTIFACT


def upload_state(client: Any, run_id: str, directory: str) -> None:
    """In the tracking writer, in order with the run's writes: the state as the run's
    ``pbt/`` artifacts, then the tag that says it is there; the local copy goes."""
    try:
        client.log_artifacts(run_id, directory, ARTIFACT)
        client.set_tag(run_id, STATE_TAG, "saved")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class KeepState(TrialCallback):
    """Every completed PBT segment's final state, uploaded to its run."""

    def on_job_result(
        self, run: RunLog, job: Job, result: JobResult, tags: Mapping[str, str]
    ) -> None:
        if job.save_to is None:
            return
        _handed_over.add(job.save_to)
        run.call(upload_state, str(job.save_to))
