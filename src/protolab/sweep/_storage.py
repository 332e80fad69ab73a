"""The sweep's Optuna storage: the store it opened, wrapped to keep its trials alive.

:class:`LeasedStorage` is what Optuna's own ``_CachedStorage`` is to an ``RDBStorage``: a
:class:`~optuna.storages.BaseStorage` that hands every call to the storage inside and adds
what the sweep needs of a store shared by workers that may die (sweep/_lease.py): beating
for a running trial (Optuna's heartbeat on RDB stores, a lease of ours on stores shared
across hosts without one), the stale trials of dead workers, and claiming such a trial.
The sweep opens its studies on one (sweep/_worker.py); Optuna has no public accessor for a
study's storage nor for a trial's id, so sweep/_lease.py reads the first in one adapter
(``storage_of``) and the storage maps trial numbers to ids through its public methods.

Importing this module imports Optuna: import it inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, GrpcStorageProxy, RDBStorage

# Optuna knows a storage beats only by this base class (``is_heartbeat_enabled``), which it
# exports from no public module; _CachedStorage inherits it the same way.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from protolab._stores import scheme
from protolab._tags import ATTR
from protolab.sweep._store_file import StoreFile

if TYPE_CHECKING:
    import sqlalchemy

    # get_all_studies returns these; Optuna exports the class from no public module.
    from optuna.study._frozen import FrozenStudy

    from protolab.sweep._types import JSONValue

__all__ = ["LEASED_SCHEMES", "LeasedStorage"]

_T = TypeVar("_T")

# Stores shared across hosts with neither Optuna heartbeats nor a lock of ours.
LEASED_SCHEMES = ("grpc", "redis")


class LeasedStorage(BaseStorage, BaseHeartbeat):
    """``storage`` (opened from ``url``), its trials kept alive while they run.

    ``opened`` is the storage as opened (an RDB store's engine and heartbeat settings);
    ``inner`` is what Optuna would have made of it (an RDB store behind Optuna's trial cache,
    as ``optuna.create_study`` wraps it), and what every call goes to.
    """

    def __init__(
        self, storage: BaseStorage, url: str | None = None, watch: Path | None = None
    ) -> None:
        self.opened = storage
        self.inner = optuna.storages.get_storage(storage)
        # the local file behind it (a journal, SQLite): checked before every call
        self._file = StoreFile(watch) if watch is not None and watch.is_file() else None
        self.leases = bool(url and scheme(url) in LEASED_SCHEMES) or isinstance(
            storage, GrpcStorageProxy
        )
        self.lease_s = 30.0  # study.heartbeat_s (tune)
        self._study_ids: dict[str, int] = {}
        self._new_trial_attrs: dict[str, JSONValue] = {}

    # --- what the sweep adds ---------------------------------------------------------

    @property
    def engine(self) -> sqlalchemy.engine.Engine | None:
        """The SQLAlchemy engine of an RDB store (its advisory locks), else None."""
        return self.opened.engine if isinstance(self.opened, RDBStorage) else None

    @property
    def heartbeat_enabled(self) -> bool:
        """Optuna's ``is_heartbeat_enabled``: an RDB store with a heartbeat interval."""
        return self.get_heartbeat_interval() is not None

    def tune(self, seconds: int) -> None:
        """Beat (or renew a lease) every ``seconds``; a trial silent for 4x that is stale."""
        self.lease_s = float(seconds)
        rdb = self.opened
        if isinstance(rdb, RDBStorage) and rdb.heartbeat_interval is not None:
            rdb.heartbeat_interval, rdb.grace_period = seconds, 4 * seconds

    def beat_interval(self) -> float | None:
        """How often a live trial beats here (None: it does not, its worker is never timed)."""
        if self.heartbeat_enabled:
            return float(self.get_heartbeat_interval() or 1)
        return self.lease_s if self.leases else None

    def stamp_new_trials(self, attrs: Mapping[str, JSONValue]) -> None:
        """Create every new trial (``study.ask``'s) with these user attrs: one write with the
        trial instead of one ``set_user_attr`` each, on a journal a synced append apiece.
        A trial made from a template (enqueued, added) keeps the template's own."""
        self._new_trial_attrs = dict(attrs)

    def study_id(self, study_name: str) -> int:
        """The id of the study named ``study_name`` (fixed for the sweep: asked once)."""
        if study_name not in self._study_ids:
            self._study_ids[study_name] = self.get_study_id_from_name(study_name)
        return self._study_ids[study_name]

    def trial_id(self, study_name: str, number: int) -> int:
        """The storage id of trial ``number`` of ``study_name`` (Optuna's trials hide it)."""
        return self.get_trial_id_from_study_id_trial_number(self.study_id(study_name), number)

    def renew(self, trial_id: int) -> None:
        """Extend the trial's lease to 4 beats from now (host clocks agree)."""
        self.set_trial_user_attr(trial_id, ATTR.LEASE_UNTIL, time.time() + 4 * self.lease_s)

    def beat(self, trial_id: int) -> None:
        """Record that the trial's worker is alive now: a heartbeat, a lease, or nothing."""
        if self.heartbeat_enabled:
            self.record_heartbeat(trial_id)
        elif self.leases:
            self.renew(trial_id)

    @contextlib.contextmanager
    def keep_alive(self, trial_id: int) -> Iterator[None]:
        """Beat for the trial while it runs (a daemon thread): at once and every heartbeat
        interval on RDB stores (as Optuna's heartbeat thread), every ``lease_s`` on leased
        stores (the ask renewed it). A failed beat is a late one: the thread goes on."""
        interval = self.beat_interval()
        if interval is None:
            yield
            return
        stop = threading.Event()

        def loop(wait: float) -> None:
            while not stop.wait(wait):
                with contextlib.suppress(Exception):
                    self.beat(trial_id)
                wait = interval

        first = 0.0 if self.heartbeat_enabled else interval
        thread = threading.Thread(target=loop, args=(first,), name="protolab-beat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """RUNNING trials whose Optuna heartbeat went stale (RDB stores; elsewhere none)."""
        return self._get_stale_trial_ids(study_id) if self.heartbeat_enabled else []

    def claim(self, trial_id: int, reason: str) -> bool:
        """Fail a dead worker's trial with ``reason``; True for the one claimant that wins
        (others race it, or the trial finished meanwhile)."""
        try:  # the reason first: a finished trial takes no more attrs
            self.set_trial_user_attr(trial_id, ATTR.FAIL_REASON, reason)
            return self.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    # --- BaseHeartbeat: the inner storage's, if it has them ---------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        if isinstance(self.inner, BaseHeartbeat):
            self.inner.record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # BaseHeartbeat's own (protected) method: the one public route, fail_stale_trials,
        # fails the trials itself, before a reason can be recorded on them.
        if isinstance(self.inner, BaseHeartbeat):
            return self.inner._get_stale_trial_ids(study_id)
        return []

    def get_heartbeat_interval(self) -> int | None:
        if isinstance(self.inner, BaseHeartbeat):
            return self.inner.get_heartbeat_interval()
        return None

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        if isinstance(self.inner, BaseHeartbeat):
            return self.inner.get_heartbeat_stale_trial_callback()
        return None

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the inner storage, its file checked first; a call that fails
        because the file went meanwhile (a read of a deleted journal) says that instead."""
        if self._file is None:
            return fn(*args)
        self._file.check()
        try:
            return fn(*args)
        except Exception:
            self._file.check()  # gone meanwhile: StudyStoreLost, not a FileNotFoundError
            raise

    # --- BaseStorage: every call to the inner storage ---------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._call(self.inner.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._call(self.inner.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: object) -> None:
        self._call(self.inner.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: JSONValue) -> None:
        self._call(self.inner.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(self.inner.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(self.inner.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(self.inner.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self.inner.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self.inner.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self.inner.get_all_studies)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None and self._new_trial_attrs:  # what study.ask() creates
            template_trial = optuna.trial.create_trial(
                state=TrialState.RUNNING, user_attrs=dict(self._new_trial_attrs)
            )
        return self._call(self.inner.create_new_trial, study_id, template_trial)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._call(
            self.inner.set_trial_param, trial_id, param_name, param_value_internal, distribution
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(
            self.inner.get_trial_id_from_study_id_trial_number, study_id, trial_number
        )

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._call(self.inner.get_trial_number_from_id, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._call(self.inner.get_trial_param, trial_id, param_name)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        return self._call(self.inner.set_trial_state_values, trial_id, state, values)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._call(self.inner.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: object) -> None:
        self._call(self.inner.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: JSONValue) -> None:
        self._call(self.inner.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(self.inner.get_trial, trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._call(self.inner.get_all_trials, study_id, deepcopy, states)

    def get_n_trials(
        self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None
    ) -> int:
        return self._call(self.inner.get_n_trials, study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(self.inner.get_best_trial, study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._call(self.inner.get_trial_params, trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call(self.inner.get_trial_user_attrs, trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call(self.inner.get_trial_system_attrs, trial_id)

    def remove_session(self) -> None:
        self._call(self.inner.remove_session)

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._call(self.inner.check_trial_is_updatable, trial_id, trial_state)
