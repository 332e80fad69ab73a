"""``protolab watch``: check the flags, then hand over to the watch session.

Flags are checked before anything is loaded (exit 2, one line); the config, the script and
the stores are checked by the session itself before its first run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from protolab.errors import UserInputError

__all__ = ["watch_command"]


def _values(params: str | None) -> dict[str, Any]:
    if params is None:
        return {}
    try:
        values = json.loads(params)
    except json.JSONDecodeError as e:
        raise UserInputError(f"--params: not valid JSON ({e.msg}), got {params!r}") from None
    if not isinstance(values, dict):
        raise UserInputError(f"--params must be a JSON object, but got {params!r}")
    return values


def watch_command(
    config: Path,
    overrides: list[str],
    params: str | None,
    best: bool,
    epochs: int,
    steps: int | None,
    track: bool,
) -> NoReturn:
    """Run ``protolab watch`` and exit with its code (130 after Ctrl-C, 143 after SIGTERM).

    Bad flags raise ``UserInputError`` (exit 2) before anything loads. A session that ran
    ends with ``os._exit``: every run is written and closed by then, and the frameworks'
    interpreter teardown (seconds, measured 2-7 s on a busy 2-core machine) would only
    delay the prompt.
    """
    if params is not None and best:
        raise UserInputError("--params and --best are exclusive; give one of them")
    if epochs < 1:
        raise UserInputError(f"--epochs: a rerun trains at least 1 epoch, but got {epochs}")
    if steps is not None and steps < 1:
        raise UserInputError(f"--steps: at least 1 step per epoch, but got {steps}")
    values = _values(params)
    from protolab.watch import WatchOptions, watch

    opts = WatchOptions(config, overrides, values, best, epochs, steps, track)
    code = watch(opts)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
