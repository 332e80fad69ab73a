"""One study in two stores: the study store (Optuna) and the tracking store (MLflow) agree.

Each study draws an id when it is created (study attr ``protolab.study_id``) and every
MLflow run of it carries the id (tag). Before a sweep writes anything, the two stores are
compared: a study store that lost the study (the journal deleted, moved or replaced), or
lost trials of it (truncated, restored from an older copy), while MLflow holds its runs is
refused with exit 2, naming both stores and the two ways on: put the study store back, or
``sweep --new-study`` to start the study over on purpose. Starting over keeps the old runs
in MLflow under their own study id; the report, the kept checkpoints and ``export`` read
the current study's (the id on the newest parent run). Without this, a lost journal made a
second study numbered from t0 beside the first one's runs, and ``export`` could ship the
first study's checkpoint.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from protolab._stores import describe_storage, redact
from protolab._tags import ATTR
from protolab.errors import StorageError

if TYPE_CHECKING:
    from optuna import Study
    from optuna.storages import BaseStorage

    from protolab.sweep._context import SweepContext
    from protolab.tracking import StudyRuns
    from protolab.tracking import TrackerProtocol as Tracker

__all__ = ["check_binding", "own_id"]

_NEW_STUDY = (
    "rerun with --new-study to start study '{name}' over (its old runs stay in MLflow under "
    "their own study id; report and export read the new study's)"
)


def _study_store(storage: BaseStorage, name: str) -> tuple[str | None, int]:
    """The study's id in the study store ("" for a study from before ids; None: no study
    of that name) and its number in the store (-1 with None)."""
    try:
        sid = storage.get_study_id_from_name(name)
    except KeyError:
        return None, -1
    return str(storage.get_study_user_attrs(sid).get(ATTR.STUDY_ID, "")), sid


def check_binding(
    ctx: SweepContext, storage: BaseStorage, tracker: Tracker, new_study: bool
) -> tuple[str, bool]:
    """The study id this sweep runs under, and whether the study's id-less runs take it
    (a study from before ids, adopted); raises StorageError (exit 2) when the stores
    disagree and ``new_study`` does not say to start over. Read-only, except that
    ``new_study`` deletes the remains of a study whose store lost trials."""
    name = ctx.study_name
    have, sid = _study_store(storage, name)
    runs = tracker.study_runs(have or "")
    if have is None:  # no study of that name: a new one, unless MLflow knows it
        if runs.parents and not new_study:
            raise _mismatch(ctx, runs, "holds no study '{name}'", "deleted, moved or replaced")
        return uuid.uuid4().hex, False
    if have == "":  # made before study ids: adopt it, and its id-less runs
        if "" in runs.parents or not runs.parents or new_study:
            return uuid.uuid4().hex, "" in runs.parents
        raise _mismatch(ctx, runs, "holds a study '{name}' without an id", "replaced")
    if have in runs.parents:
        # Counted after MLflow was read: a trial is in the study store before its run is in
        # MLflow, so a worker of the same study asking meanwhile cannot look like a loss.
        n_trials = storage.get_n_trials(sid)
        last = runs.latest_trial
        if last is None or last < n_trials:
            return have, False
        if not new_study:
            raise _mismatch(
                ctx,
                runs,
                f"holds {n_trials} trials of study '{{name}}'",
                "truncated or restored from an older copy",
                f"but MLflow has its runs up to trial {last}",
            )
        import optuna

        optuna.delete_study(study_name=name, storage=storage)
        return uuid.uuid4().hex, False
    if runs.parents and not new_study:
        raise _mismatch(ctx, runs, f"holds study '{{name}}' with id {have}", "replaced")
    return have, False


def _mismatch(
    ctx: SweepContext, runs: StudyRuns, holds: str, what: str, detail: str = ""
) -> StorageError:
    """Exit 2: both stores named, what happened, and the two ways on."""
    name = ctx.study_name
    store = describe_storage(ctx.cfg.study.storage)
    ids = ", ".join(i or "none (before study ids)" for i in runs.parents)
    detail = detail or f"but tracking.uri {redact(ctx.tracking_uri)} holds its runs"
    if "tracking.uri" not in detail:
        detail += f" in tracking.uri {redact(ctx.tracking_uri)}"
    return StorageError(
        f"{ctx.config_path}: study.storage: {store} {holds.format(name=name)}, {detail} "
        f"(study id {ids}): the study store was {what}. Put the study store back as it was "
        f"and rerun, or {_NEW_STUDY.format(name=name)}"
    )


def own_id(study: Study, study_id: str) -> str:
    """Give ``study`` its id unless it has one (another worker may have set it first:
    call under the study's lock); the id it holds."""
    found = study.user_attrs.get(ATTR.STUDY_ID)
    if found:
        return str(found)
    study.set_user_attr(ATTR.STUDY_ID, study_id)
    return study_id
