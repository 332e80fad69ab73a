"""``--params JSON`` / ``--best``, shared by ``protolab run`` and ``protolab watch``."""

from __future__ import annotations

import json
from typing import Any

from protolab.errors import UserInputError

__all__ = ["fixed_values"]


def fixed_values(params: str | None, best: bool) -> dict[str, Any]:
    """``--params`` as a JSON object (``--best`` fills them in later); bad input is exit 2."""
    if params is not None and best:
        raise UserInputError("--params and --best are exclusive; give one of them")
    if params is None:
        return {}
    try:
        values = json.loads(params)
    except json.JSONDecodeError as e:
        raise UserInputError(f"--params: not valid JSON ({e.msg}), got {params!r}") from None
    if not isinstance(values, dict):
        raise UserInputError(f"--params must be a JSON object, but got {params!r}")
    return values
