"""Family aliases (``dynamic``, ``static``): pick each family's fastest mode for a model.

Which mode is fastest depends on the model and the machine: whole-epoch XLA wins on MLPs,
TensorFlow's own kernels win on CPU convolutions, a compiled torch step wins on wide
layers. So a headline "dynamic vs static" compares the best of each family, not a fixed
pick: every candidate trains the job briefly (``_EPOCHS`` epochs of at most ``_STEPS``
steps), and the lowest steady step time wins. The choice is cached per model (arch hash,
data, batch, hardware) for the life of the process and recorded on the run.

The dynamic family's short run keeps the job's own epochs whole (fewer of them; see
``short_job``): an eager candidate's thread probe records its choice under the job's own
key (``_threads.chosen_threads``), so a compiled candidate is timed at that count in the
calibration and trains at it in the alias's own run. A per-epoch cap made the
calibration's key another one: the probe's choice never reached the alias's run, which
trained a compiled pick at torch's default count (``mlp-small`` on the quiet 2-core VM:
2.79 ms a step at 2 threads under the alias, 1.11 ms at the probe's 1 thread by name).

A mode left out of the aliases for its compile cost (``calibrate=False`` in the registry:
a cold compile costs more than most trials save) becomes a candidate when the persistent
compile cache already holds this model's compile (``compile_cache_warm``): then trying it
costs a warm compile, a fraction of the cold one. The run's ``protolab.calibration`` tag
says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from protolab.backends._base import Job, epoch_plan
from protolab.backends._registry import (
    ALIASES,
    Family,
    backend_info,
    backend_names,
    family_members,
    get_backend,
)
from protolab.errors import ArchError

if TYPE_CHECKING:
    from protolab.arch import Arch

__all__ = ["Choice", "calibrate", "check_buildable", "frameworks_for", "resolve", "short_job"]

_EPOCHS, _STEPS = 3, 20
_CHOICES: dict[tuple[object, ...], Choice] = {}
_MAX_CACHED = 256


@dataclasses.dataclass(frozen=True)
class Choice:
    """The mode an alias picked, and what each candidate measured (ms/step; nan: failed)."""

    alias: str
    name: str
    step_ms: dict[str, float]
    warm: tuple[str, ...] = ()  # modes tried only because their compile cache was warm

    @property
    def tag(self) -> str:
        return f"{self.alias}->{self.name}"

    @property
    def summary(self) -> str:
        if not self.step_ms:
            return f"{self.name}: the family's only candidate"
        timed = ", ".join(f"{n}={v:.3g}ms" for n, v in self.step_ms.items())
        if not self.warm:
            return timed
        return (
            f"{timed}; {', '.join(self.warm)} tried because the compile cache holds this "
            "model's compile (warm)"
        )


@runtime_checkable
class WarmAware(Protocol):
    """A backend that can say whether its persistent compile cache holds a job's compile."""

    def compile_cache_warm(self, job: Job) -> bool: ...


def _warm_candidates(
    family: Family, job: Job, short: Job, frameworks: tuple[str, ...]
) -> list[str]:
    """The family's modes left out for their cold compile whose cache holds this model."""
    out = []
    for name in backend_names():
        info = backend_info(name)
        if (
            info.family != family
            or info.calibrate
            or (info.builds and info.builds not in frameworks)
        ):
            continue
        backend = get_backend(name)
        if isinstance(backend, WarmAware) and (
            backend.compile_cache_warm(job) or backend.compile_cache_warm(short)
        ):
            out.append(name)
    return out


def _key(family: str, job: Job) -> tuple[object, ...]:
    ds = job.dataset
    return (family, job.arch.hash, ds.name, len(ds.x_train), job.train.batch_size, job.hardware)


def short_job(family: Family, job: Job) -> Job:
    """The calibration's version of ``job``: about ``_EPOCHS * _STEPS`` steps.

    Static modes compile a whole epoch, so their epochs are cut to ``_STEPS`` steps
    (steady state from the second epoch). The dynamic modes keep the job's epochs whole,
    as many as fit in ``_EPOCHS * _STEPS`` steps (one epoch longer than that is cut there,
    by ``max_total_steps``): their programs and thread choices are keyed by the job's shape
    (``job_key``), which a per-epoch cap would change.
    """
    tr = job.train
    if family == "static":
        return dataclasses.replace(
            job, train=dataclasses.replace(tr, epochs=_EPOCHS, max_steps=_STEPS)
        )
    cap = _EPOCHS * _STEPS
    per_epoch = _steps_per_epoch(job)
    epochs = _EPOCHS if not per_epoch else max(1, min(_EPOCHS, cap // per_epoch))
    total = cap if tr.max_total_steps is None else min(cap, tr.max_total_steps)
    train = dataclasses.replace(tr, epochs=epochs, max_total_steps=total)
    return dataclasses.replace(job, train=train)


def _steps_per_epoch(job: Job) -> int | None:
    """A job's steps per epoch as its data says them (None: a stream of unknown length)."""
    ds, tr = job.dataset, job.train
    if ds.stream is not None:
        return ds.stream.steps_per_epoch
    n = len(ds.x_train)
    full, tail = epoch_plan(n, max(min(tr.batch_size, n), 1), tr.drop_last, tr.max_steps)
    return full + (1 if tail else 0)


def calibrate(
    family: Family, job: Job, on_error: Callable[[str, BaseException], None] | None = None
) -> Choice:
    """Time every mode of ``family`` on a short version of ``job``; the fastest wins."""
    short = short_job(family, job)
    frameworks = frameworks_for(job.arch)
    warm = _warm_candidates(family, job, short, frameworks)
    key = (*_key(family, job), *warm)
    if key in _CHOICES:
        return _CHOICES[key]
    timings: dict[str, float] = {}
    candidates = family_members(family, frameworks) + warm
    if len(candidates) == 1:  # nothing to choose between: no calibration run
        return Choice(family, candidates[0], {})
    for name in candidates:
        backend = get_backend(name)
        limit = backend.max_devices
        if limit is not None and job.hardware.devices > limit:
            continue
        try:
            timings[name] = backend.run(short).metrics["time/step_ms"]
        except Exception as e:  # a mode that cannot run this model is not a candidate
            timings[name] = math.nan
            if on_error is not None:
                on_error(name, e)
        finally:
            backend.release()
    ok = {n: v for n, v in timings.items() if math.isfinite(v)}
    if not ok:
        raise RuntimeError(f"no {family} mode could train this model: {timings}")
    choice = Choice(family, min(ok, key=ok.__getitem__), timings, tuple(warm))
    if len(_CHOICES) >= _MAX_CACHED:
        _CHOICES.pop(next(iter(_CHOICES)))
    _CHOICES[key] = choice
    return choice


def frameworks_for(arch: Arch) -> tuple[str, ...]:
    """The frameworks whose builders can make ``arch`` (custom layers may support one)."""
    from protolab.arch._custom import FRAMEWORKS, unsupported

    return tuple(f for f in FRAMEWORKS if not unsupported(arch.layers, f))


def check_buildable(names: list[str], arch: Arch) -> None:
    """Refuse, before anything runs, a mode whose framework cannot build one of the layers."""
    from protolab.arch._custom import unsupported

    can = frameworks_for(arch)
    for name in names:
        if name in ALIASES:
            for family in ALIASES[name]:
                if not family_members(family, can):
                    raise ArchError(
                        f"backends: {name}: no {family} mode can build this model (its custom "
                        f"layers have builders for {', '.join(can) or 'no framework in common'})"
                    )
            continue
        builds = backend_info(name).builds
        if builds and builds not in can:
            missing = unsupported(arch.layers, builds)
            able = [n for n in backend_names() if backend_info(n).builds in can]
            raise ArchError(
                f"backends: {name} builds with {builds}, but {missing[0]!r} has no {builds}() "
                f"builder; use backends that can: {', '.join(able) or 'none'}"
            )


def resolve(names: list[str], job: Job) -> list[tuple[str, Choice | None]]:
    """Config backends -> the modes to run, in order: aliases calibrated, names kept.

    Each mode runs once: an alias whose pick is already listed adds nothing, and a name an
    earlier alias picked runs as that alias's pick (its calibration tags kept). Two runs of
    one mode in one trial would share a run name and a result slot, so one of them would
    be lost."""
    out: list[tuple[str, Choice | None]] = []
    for name in names:
        if name not in ALIASES:
            if all(n != name for n, _ in out):
                out.append((name, None))
            continue
        for family in ALIASES[name]:
            choice = calibrate(family, job)
            if all(n != choice.name for n, _ in out):
                out.append((choice.name, choice))
    return out
