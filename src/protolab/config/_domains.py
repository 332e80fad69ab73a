"""What each train setting may be, checked alike for a plain value, a range and a choice.

A setting that cannot work (``lr: .nan``, ``weight_decay: -1``, ``batch_size: {choices: [0]}``,
``lr: {choices: [fast]}``) is refused when the config loads, never discovered by a trial.
Range and Choice are duck-typed here (``low``/``high``/``step`` or ``choices``) so this
module does not import the config models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from protolab._format import short

__all__ = ["TRAIN_DOMAINS", "Domain", "check_train_value"]


@dataclass(frozen=True)
class Domain:
    """A numeric domain: ``low`` (open or closed) and optionally whole numbers only."""

    low: float
    open_low: bool = False
    integer: bool = False

    @property
    def text(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"

    def problem(self, v: Any) -> str | None:
        """Why ``v`` is outside the domain, or None when it is inside."""
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"is not a number ({type(v).__name__})"
        if not math.isfinite(v):
            return "is not finite"
        if self.integer and float(v) != int(v):
            return "is not a whole number"
        if v < self.low or (self.open_low and v == self.low):
            return f"is {'<=' if self.open_low else '<'} {self.low:g}"
        return None


TRAIN_DOMAINS: dict[str, Domain] = {
    "batch_size": Domain(1, integer=True),
    "lr": Domain(0, open_low=True),
    "weight_decay": Domain(0),
}


def check_train_value(name: str, v: Any) -> Any:
    """Raise ValueError unless ``v`` (value, range or choice) lies in ``name``'s domain."""
    domain = TRAIN_DOMAINS[name]
    op = ">" if domain.open_low else ">="
    if hasattr(v, "choices"):
        for c in v.choices:
            why = domain.problem(c)
            if why is not None:
                raise ValueError(
                    f"every choice of {name} must be {domain.text}, but got {short(c)} "
                    f"(it {why}) in choices {short(list(v.choices))}"
                )
        return v
    if hasattr(v, "low"):
        if domain.problem(v.low) is not None:
            raise ValueError(f"`low {op} {domain.low:g}` must hold for {name}, but got low={v.low}")
        if domain.integer:
            given = {"low": v.low, "high": v.high, "step": v.step}
            given = {k: x for k, x in given.items() if x is not None}
            if any(float(x) != int(x) for x in given.values()):
                got = ", ".join(f"{k}={x}" for k, x in given.items())
                raise ValueError(f"a range for {name} takes whole numbers, but got {got}")
        return v
    if domain.problem(v) is not None:
        raise ValueError(f"`{name} {op} {domain.low:g}` must hold, but got {short(v)}")
    return v
