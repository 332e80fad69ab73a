"""`Space`: the object an experiment function asks for its mutable choices.

A `Space` has two sources of values behind one API: an Optuna trial during a sweep
(``space.int`` becomes ``trial.suggest_int`` with the same name), or a plain mapping of
fixed values outside a sweep (``protolab run``), falling back to each declaration's default.
Optuna is never imported here: the trial is only duck-typed, so loading a script stays cheap.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from protolab.errors import SpaceError

__all__ = ["Distribution", "Space"]

Kind = Literal["int", "float", "choice"]

# train settings an experiment may set per trial with ``space.train(...)``
TRAIN_KEYS = (
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "grad_clip",
    "label_smoothing",
    "loss",
    "drop_last",
)


class _Suggester(Protocol):
    """The subset of ``optuna.Trial`` a Space needs (kept structural: no optuna import)."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Distribution:
    """One declared choice; kept so reuse of a name with a different range is caught."""

    kind: Kind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def default(self) -> Any:
        """The value used outside a sweep when none is given: the middle of the range."""
        if self.kind == "choice":
            return self.choices[0]
        assert self.low is not None and self.high is not None
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.kind == "int":
            step = int(self.step or 1)
            low = int(self.low)
            return low + round((round(mid) - low) / step) * step
        if self.step:
            return self.low + round((mid - self.low) / self.step) * self.step
        return mid

    def validate(self, name: str, value: object) -> Any:
        """Check a given value against the declaration (values come from users or JSON)."""
        if self.kind == "choice":
            if value not in self.choices:
                raise SpaceError(f"'{name}' must be one of {list(self.choices)}, but got {value!r}")
            return value
        assert self.low is not None and self.high is not None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"'{name}' must be a number, but got {value!r}")
        if not math.isfinite(value):  # NaN passes no comparison: refuse it by name
            raise SpaceError(
                f"'{name}' must be a finite number in [{self.low}, {self.high}], but got {value!r}"
            )
        if self.kind == "int":
            if float(value) != int(value):
                raise SpaceError(f"'{name}' must be an integer, but got {value!r}")
            value = int(value)
        if not self.low <= value <= self.high:
            raise SpaceError(
                f"'{name}' must satisfy {self.low} <= value <= {self.high}, but got {value!r}"
            )
        return value

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice({list(self.choices)})"
        extra = ", log=True" if self.log else ""
        extra += f", step={self.step}" if self.step else ""
        return f"{self.kind}({self.low}, {self.high}{extra})"


def _check_step(where: str, low: float, high: float, step: float) -> None:
    """A step wider than the range leaves one value, ``low``: refused rather than every
    trial silently getting it."""
    if step > high - low > 0:
        raise SpaceError(
            f"{where}: `step <= high - low` must hold, but got step={step} for "
            f"low={low}, high={high}"
        )


class Space:
    """Where an experiment declares its mutable choices (width, depth, activation ...).

    Use it inside an ``@protolab.experiment`` function; plain Python control flow decides
    which choices exist in a given trial (define-by-run). Asking for the same name twice
    with the same declaration returns the same value, as Optuna does.
    """

    def __init__(
        self,
        trial: _Suggester | None = None,
        values: Mapping[str, Any] | None = None,
        prefix: str = "",
    ) -> None:
        self._trial = trial
        self._given = dict(values or {})
        self._prefix = prefix
        self._declared: dict[str, Distribution] = {}
        self._values: dict[str, Any] = {}
        self._train: dict[str, Any] = {}

    @property
    def values(self) -> dict[str, Any]:
        """Every value this space handed out, by name (the trial's architecture params)."""
        return dict(self._values)

    @property
    def distributions(self) -> dict[str, Distribution]:
        return dict(self._declared)

    @property
    def train_settings(self) -> dict[str, Any]:
        """The train settings the experiment set with :meth:`train`, by config key."""
        return dict(self._train)

    def train(self, **settings: Any) -> None:
        """Set this trial's train settings from the experiment, e.g. an lr that depends on
        the sampled depth: ``space.train(lr=space.float("lr", 1e-4, 1e-2, log=True) / depth)``.

        Values are plain (sample them with this space first, so the sampler sees them);
        they replace the config's value, are checked by the config's rules, and are logged
        as ``train.<key>`` params. A key the config already searches cannot be set here.
        """
        for key, value in settings.items():
            if key not in TRAIN_KEYS:
                raise SpaceError(
                    f"space.train({key}=...): not a train setting an experiment may set; "
                    f"allowed: {', '.join(TRAIN_KEYS)}"
                )
            self._train[key] = _checked_train_value(key, value)

    def int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        """An integer in ``[low, high]`` (``optuna.Trial.suggest_int``)."""
        for arg, v in (("low", low), ("high", high), ("step", step)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise SpaceError(f"space.int({name!r}): `{arg}` must be an int, but got {v!r}")
        self._check_range(name, low, high, log)
        if step < 1:
            raise SpaceError(f"space.int({name!r}): `step >= 1` must hold, but got step={step}")
        if log and step != 1:
            raise SpaceError(f"space.int({name!r}): `step` must be 1 when log=True")
        _check_step(f"space.int({name!r})", low, high, step)
        dist = Distribution("int", low, high, step if step != 1 else None, log)
        return int(self._ask(name, dist))

    def float(
        self,
        name: str,
        low: builtins.float,
        high: builtins.float,
        *,
        step: builtins.float | None = None,
        log: bool = False,
    ) -> builtins.float:
        """A float in ``[low, high]`` (``optuna.Trial.suggest_float``)."""
        for arg, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpaceError(f"space.float({name!r}): `{arg}` must be a number, but got {v!r}")
        self._check_range(name, low, high, log)
        if step is not None and (
            isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step)
        ):
            raise SpaceError(f"space.float({name!r}): `step` must be a number, but got {step!r}")
        if step is not None and (log or step <= 0):
            raise SpaceError(
                f"space.float({name!r}): `step > 0` without log=True must hold, "
                f"but got step={step}, log={log}"
            )
        if step is not None:
            _check_step(f"space.float({name!r})", low, high, step)
        return float(self._ask(name, Distribution("float", low, high, step, log)))

    def choice(self, name: str, choices: Sequence[Any]) -> Any:
        """One of ``choices`` (``optuna.Trial.suggest_categorical``)."""
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices:
            raise SpaceError(
                f"space.choice({name!r}): `choices` must be a non-empty list, but got {choices!r}"
            )
        for i, c in enumerate(choices):
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise SpaceError(
                    f"space.choice({name!r}): choices must be None, bool, int, float or str, "
                    f"but got {c!r:.100}"
                )
            if isinstance(c, float) and not math.isfinite(c):
                raise SpaceError(f"space.choice({name!r}): choices must be finite, but got {c!r}")
            if any(c == d and type(c) is type(d) for d in choices[:i]):
                raise SpaceError(
                    f"space.choice({name!r}): choices must be distinct, but {c!r:.100} "
                    "appears twice"
                )
        return self._ask(name, Distribution("choice", choices=tuple(choices)))

    def _check_range(self, name: str, low: builtins.float, high: builtins.float, log: bool) -> None:
        for arg, v in (("low", low), ("high", high)):
            if not math.isfinite(v):
                raise SpaceError(f"space({name!r}): `{arg}` must be finite, but got {v!r}")
        if low > high:
            raise SpaceError(
                f"space({name!r}): `low <= high` must hold, but got low={low}, high={high}"
            )
        if log and low <= 0:
            raise SpaceError(f"space({name!r}): `low > 0` must hold when log=True, but got {low}")

    def _ask(self, name: str, dist: Distribution) -> Any:
        if not isinstance(name, str) or not name:
            raise SpaceError(f"space: a name must be a non-empty string, but got {name!r:.100}")
        if not self._prefix and name.startswith("train."):
            raise SpaceError(
                f"space: {name!r}: names starting with 'train.' are the config's train "
                "settings (train.lr ...); set those in the config, or use another name"
            )
        known = self._declared.get(name)
        if known is not None:
            if known != dist:
                raise SpaceError(
                    f"space: '{name}' is declared twice with different ranges: "
                    f"{known.describe()} and {dist.describe()}; use a distinct name per choice"
                )
            return self._values[name]
        self._declared[name] = dist
        full = self._prefix + name
        if self._trial is not None:
            value = self._suggest(full, dist)
        elif full in self._given:
            value = dist.validate(full, self._given[full])
        else:
            value = dist.default()
        self._values[name] = value
        return value

    def _suggest(self, name: str, d: Distribution) -> Any:
        assert self._trial is not None
        if d.kind == "choice":
            return self._trial.suggest_categorical(name, list(d.choices))
        assert d.low is not None and d.high is not None
        if d.kind == "int":
            return self._trial.suggest_int(
                name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log
            )
        return self._trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


def _checked_train_value(key: str, value: object) -> Any:
    """``value`` as the config would read ``train.<key>``; SpaceError with its rule if not."""
    from pydantic import ValidationError

    from protolab.config import TrainConfig

    if isinstance(value, (dict, list, tuple)):
        raise SpaceError(
            f"space.train({key}=...): a plain value is needed (sample it with space.float, "
            f"space.int or space.choice first), but got {value!r:.100}"
        )
    try:
        return getattr(TrainConfig.model_validate({key: value}), key)
    except ValidationError as e:
        msg = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise SpaceError(f"space.train({key}={value!r:.100}): {msg}") from None
