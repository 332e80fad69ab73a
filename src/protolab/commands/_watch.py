"""``protolab watch``: check the flags, then hand over to the watch session.

Flags are checked before anything is loaded (exit 2, one line); the config, the script and
the stores are checked by the session itself before its first run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from protolab.commands._params import fixed_values
from protolab.errors import UserInputError

__all__ = ["watch_command"]


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
    if epochs < 1:
        raise UserInputError(f"--epochs: a rerun trains at least 1 epoch, but got {epochs}")
    if steps is not None and steps < 1:
        raise UserInputError(f"--steps: at least 1 step per epoch, but got {steps}")
    values = fixed_values(params, best)
    from protolab.watch import WatchOptions, watch

    opts = WatchOptions(config, overrides, values, best, epochs, steps, track)
    code = watch(opts)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
