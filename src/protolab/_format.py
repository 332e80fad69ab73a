"""Values for people: three significant digits, no float noise (terminal, MLflow notes), and
reprs cut short so that an error message never echoes a whole blob."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["short", "sig3"]


def sig3(v: float | int | None) -> str:
    """``0.975``, ``13.9``, ``4.80``, ``1,172``, ``7.50e-04``; ``-`` for none/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 999.5:
        return f"{v:,.0f}"
    if a >= 1e-3:
        decimals = max(2 - math.floor(math.log10(a)), 0)
        text = f"{v:.{decimals}f}"
        return text if len(text.lstrip("-").replace(".", "").lstrip("0")) <= 3 else f"{v:.3g}"
    return f"{v:.2e}"


def short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to about ``limit`` characters: messages never echo a whole blob."""
    try:
        text = repr(value)
    except RecursionError:  # a self-referencing structure (a recursive YAML alias)
        text = f"<recursive {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
