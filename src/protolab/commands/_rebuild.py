"""A kept native model (``pl.native``), rebuilt by running the user's own script.

A native model's builders are code in the experiment script, so its ``arch.json`` cannot
rebuild it. ``export`` and ``predict`` rebuild it from the user's LOCAL project instead: the
script that ``--config`` names, checked against the script hash the trial's run recorded,
called with the trial's recorded params, then given the checkpoint's weights (loaded the
safe way, as for any checkpoint). Nothing read from the tracking store runs: the script copy
stored with the run is never used, only its hash.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolab._tags import TAG
from protolab.errors import UserInputError

if TYPE_CHECKING:
    from mlflow.entities import Run

    from protolab.arch import Arch
    from protolab.backends import ExportableModel

__all__ = ["load_kept", "native_name", "rebuild_native"]

# What a damaged or replaced checkpoint raises while it is read (JSON, arrays, weights
# loaded with weights_only=True, an Arch of registered layers): exit 2, not a traceback.
_DAMAGED = (ValueError, KeyError, TypeError, OSError, RuntimeError, EOFError, zipfile.BadZipFile)

_NOT_ARCH = ("backend", "family", "mode", "study.seed")  # params the run adds to the trial's


def _find_native(node: object) -> str | None:
    """The name of the first ``Native`` layer in an ``arch.json`` tree, if any."""
    if isinstance(node, dict):
        if node.get("type") == "Native":
            return str(node.get("name", "native"))
        node = list(node.values())
    if isinstance(node, list):
        return next((n for n in map(_find_native, node) if n is not None), None)
    return None


def native_name(checkpoint: Path) -> str | None:
    """The native model's name if the checkpoint holds one (its Arch needs the script)."""
    try:  # the backends' checkpoint layout: the Arch is arch.json beside checkpoint.json
        return _find_native(json.loads((checkpoint / "arch.json").read_text()))
    except (OSError, ValueError):
        return None


def _param_value(text: str) -> Any:
    """An MLflow param (a string) as the value the trial sampled: JSON, Python's bool/None
    spellings, else the string itself (a categorical choice)."""
    spelled = {"True": True, "False": False, "None": None}
    if text in spelled:
        return spelled[text]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _trial_params(run: Run) -> dict[str, Any]:
    params = run.data.params
    return {
        k: _param_value(v)
        for k, v in params.items()
        if not k.startswith("train.") and k not in _NOT_ARCH
    }


def _local_script(config: Path, run: Run) -> Path:
    """The script ``config`` names, if it is the version the trial ran (exit 2 if not)."""
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.script import script_hash

    _, script = load_config(config, backends=NAMES)
    recorded = str(run.data.tags.get(TAG.SCRIPT_HASH, ""))
    local = script_hash(script)
    if not recorded:
        raise UserInputError(
            f"run {run.info.run_name} records no {TAG.SCRIPT_HASH}, so {script} cannot be "
            "checked against the script that trained it; sweep the study again to export it"
        )
    if local != recorded:
        raise UserInputError(
            f"--config: {script} has script hash {local}, but run {run.info.run_name} was "
            f"trained by script hash {recorded}: the rebuilt model would not be the trained "
            "one; check out the script version that ran (git log, or the run's script "
            "artifact to compare with), then rerun this command"
        )
    return script


def rebuild_native(checkpoint: Path, run: Run, config: Path | None, retry: str) -> Arch | None:
    """The trial's Arch rebuilt from the local script, or None if ``arch.json`` suffices.

    ``retry`` is the command to run with ``--config`` added, named when none was given.
    """
    from protolab.backends import read_meta
    from protolab.script import load_experiment
    from protolab.space import Space

    name = native_name(checkpoint)
    if name is None:
        return None
    if config is None:
        raise UserInputError(
            f"run {run.info.run_name} holds a native model (pl.native {name!r}): its builders "
            "are code in your experiment script, so it is rebuilt by running your local copy "
            f"of that script with the trial's params; give the study's config: `{retry}`"
        )
    script = _local_script(config, run)
    try:
        arch = load_experiment(script).build(Space(values=_trial_params(run)))
    except UserInputError as e:
        raise UserInputError(f"{script}: rebuilding run {run.info.run_name}: {e}") from None
    want = read_meta(checkpoint).arch_hash
    if arch.hash != want:
        raise UserInputError(
            f"{script}: the rebuilt model (arch hash {arch.hash}) is not the one run "
            f"{run.info.run_name} trained (arch hash {want}); the script's builders or the "
            "trial's params changed"
        )
    return arch


def load_kept(checkpoint: Path, arch: Arch | None, where: str) -> ExportableModel:
    """A kept checkpoint's model, read the safe way; a damaged or replaced one is exit 2.

    Everything in it is data (``checkpoint.json``, ``arch.json`` of registered layer types,
    weights with ``weights_only=True`` or plain arrays): a tampered file fails to load, and
    says so in one line (``where``: the flag or argument it came from), never a traceback.
    """
    from protolab.backends import load_trained

    try:
        return load_trained(checkpoint, arch)
    except UserInputError:
        raise
    except (*_DAMAGED, pickle.UnpicklingError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserInputError(
            f"{where}: the checkpoint ({checkpoint.name}) is not one protolab can read: "
            f"{type(e).__name__}: {first}; it was damaged or replaced, so it is refused"
        ) from None
