"""MLflow runs of a watch session: one parent per session, a run per rerun and mode.

The session lives in the study's MLflow experiment (as ``protolab run`` runs do) under a
parent of its own, tagged ``protolab.role=watch`` and ``protolab.watch=<session>``; its
runs are named ``w<n>-<mode>`` and carry the usual tags (script, config and arch hashes,
mode, state) plus ``protolab.watch``, and the script and config as they ran. Their trial
tag is ``w<n>``, not a number, so sweep tables, notes and ``ls`` counts leave them out.

The writes are made in this process after a rerun has shown its results (a warm process is
idle between saves), so they never sit between a save and its first loss. Ctrl-C while a
run is being written ends it KILLED; the session's parent ends FINISHED with the session.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from protolab._signals import shielded
from protolab._tags import TAG
from protolab.sweep import mode_tags, run_artifacts
from protolab.tracking import Tracker

if TYPE_CHECKING:
    from protolab.watch._rerun import ModeRun, Rerun

__all__ = ["WatchTracker", "open_watch_tracker"]


class WatchTracker(Tracker):
    """The study's experiment, with a new parent run for this watch session."""

    def __init__(self, uri: str, experiment: str, study: str, session: str) -> None:
        self.session = session
        super().__init__(uri, experiment, study)

    def _parent_run(self) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.session,
            tags={TAG.ROLE: "watch", TAG.STUDY: self.study, TAG.WATCH: self.session},
        )
        return str(run.info.run_id)

    def end(self, status: str = "FINISHED") -> None:
        """End the session's parent (no study notes: a watch session is not a sweep)."""
        self.client.set_terminated(self.parent_id, status=status)

    def log_rerun(self, rerun: Rerun) -> None:
        """Every mode of ``rerun`` as its own run (or one failed run per mode if none ran)."""
        from protolab.backends import environment_tags

        assert rerun.loaded is not None
        ctx = rerun.loaded.ctx
        label = f"w{rerun.number}"
        base = {
            TAG.STUDY: ctx.study_name,
            TAG.TRIAL: label,
            TAG.WATCH: self.session,
            TAG.SCRIPT_HASH: ctx.script_hash,
            TAG.CONFIG_HASH: ctx.config_hash,
            TAG.METRIC: ctx.metric,
            TAG.DATA: str(ctx.dataset.name),
            **{f"{TAG.PREFIX}{k}": v for k, v in environment_tags(ctx.script_path).items()},
        }
        if rerun.arch is not None:
            base[TAG.ARCH_HASH] = rerun.arch.hash
            texts = run_artifacts(ctx, rerun.arch, {})
        else:
            texts = {f"script/{ctx.script_path.name}": ctx.script_path.read_text()}
        for mode in rerun.modes:
            tags = mode_tags(mode.name, mode.choice, base)
            self._log_mode(f"{label}-{mode.name}", tags, rerun, mode, texts)

    def _log_mode(
        self, name: str, tags: dict[str, str], rerun: Rerun, mode: ModeRun, texts: dict[str, str]
    ) -> None:
        params = {**rerun.params, "backend": mode.name, "watch.epochs": _epochs(rerun)}
        with shielded():  # a Ctrl-C meanwhile is raised once the run is whole
            self._write_mode(name, tags, params, mode, texts)

    def _write_mode(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        mode: ModeRun,
        texts: dict[str, str],
    ) -> None:
        run = self.child(name, tags, params)
        try:
            run.log_texts(texts)
            result = mode.result
            if result is None:
                run.log_text(mode.traceback or mode.error, "traceback.txt")
                run.end("FAIL", mode.error)
                return
            for epoch, metrics in enumerate(result.history, start=1):
                run.log_metrics(metrics, step=epoch)
            last = result.history[-1] if result.history else {}
            once = {k: v for k, v in result.metrics.items() if k not in last}
            run.log_metrics({**once, "watch/save_to_first_loss_s": mode.first_loss_s}, step=0)
            run.set_tags({f"{TAG.PREFIX}{k}": v for k, v in result.tags.items()})
            run.end("COMPLETE")
        except BaseException:
            run.end("INTERRUPTED", "interrupted while the watch session was logging")
            raise

    def log_failure(self, rerun: Rerun, backends: list[str]) -> None:
        """A rerun whose script, config or build failed: one FAILED run, with the reason."""
        tags = {TAG.TRIAL: f"w{rerun.number}", TAG.WATCH: self.session, TAG.STUDY: self.study}
        if rerun.loaded is not None:  # so the report can place it in its version
            tags[TAG.SCRIPT_HASH] = rerun.loaded.ctx.script_hash
            tags[TAG.CONFIG_HASH] = rerun.loaded.ctx.config_hash
        with shielded():
            run = self.child(f"w{rerun.number}-failed", tags, {"backends": json.dumps(backends)})
            try:
                run.log_text(rerun.traceback or rerun.error, "traceback.txt")
                run.end("FAIL", rerun.error.splitlines()[0] if rerun.error else "failed")
            except BaseException:
                run.end("INTERRUPTED", "interrupted while the watch session was logging")
                raise


def _epochs(rerun: Rerun) -> int:
    return rerun.settings.epochs if rerun.settings is not None else 0


def open_watch_tracker(uri: str, experiment: str, study: str) -> WatchTracker:
    """The session's tracker; a store that cannot be opened is a ``StorageError``."""
    from protolab.tracking._mlflow import _open_error

    session = f"watch-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        return WatchTracker(uri, experiment, study, session)
    except Exception as e:
        raise _open_error(uri, e) from None
