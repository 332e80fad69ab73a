"""Checks that need more than the config: this machine, the dataset, the stores' paths.

Everything here reads and never writes, and runs after the config and the script loaded
but before any store is opened, so a mistake knowable up front is exit 2, not ten failed
trials: hardware that is not there, metrics the dataset cannot produce, store paths that
cannot be written, a ``$MLFLOW_TRACKING_URI`` that is not a URI.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from protolab.config._domains import short
from protolab.config._metrics import metric_task_problem
from protolab.config._model import (
    TRACKING_SCHEMES,
    HardwareConfig,
    _redacted,
    _scheme,
    check_train_task,
)
from protolab.errors import ConfigError, ScriptError, StorageError

__all__ = [
    "check_context",
    "check_hardware",
    "check_metrics",
    "check_sqlite_file",
    "check_store_path",
    "check_tracking_uri",
    "check_values",
    "visible_gpus",
]


def visible_gpus() -> int | None:
    """GPUs this process can use, without importing a framework (None: cannot tell here)."""
    if not sys.platform.startswith("linux"):
        return None
    found = len(glob.glob("/dev/nvidia[0-9]*")) or int(os.path.exists("/dev/kfd"))
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and found:
        ids = []
        for part in env.split(","):  # CUDA stops at the first invalid id ("-1" hides all)
            if not part.strip() or part.strip().startswith("-"):
                break
            ids.append(part)
        found = min(found, len(ids))
    return found


def _has_tpu() -> bool | None:
    if not sys.platform.startswith("linux"):
        return None
    env = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")) or any(
        os.environ.get(k) for k in env
    )


def _bf16_problem(n_gpus: int) -> str | None:
    """A GPU older than Ampere (compute capability < 8.0) has no bfloat16 arithmetic."""
    smi = shutil.which("nvidia-smi")
    if smi is None or not n_gpus:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.strip().splitlines():
        name, _, cap = line.rpartition(",")
        try:
            if float(cap) < 8.0:
                return f"{name.strip()} (compute capability {cap.strip()}) has no bfloat16"
        except ValueError:
            continue
    return None


def check_hardware(hw: HardwareConfig, source: str) -> None:
    """Refuse an accelerator, device count or precision this machine does not have."""
    gpus = visible_gpus()
    seen = "CUDA_VISIBLE_DEVICES=" + os.environ["CUDA_VISIBLE_DEVICES"] if (
        "CUDA_VISIBLE_DEVICES" in os.environ
    ) else "no /dev/nvidia* device"  # fmt: skip
    if hw.accelerator == "gpu" and gpus == 0:
        raise ConfigError(
            f"{source}: hardware.accelerator: 'gpu' asked for, but this machine has no GPU "
            f"({seen}); allowed here: auto or cpu"
        )
    if hw.accelerator == "gpu" and gpus is not None and hw.devices > gpus:
        raise ConfigError(
            f"{source}: hardware.devices: {hw.devices} GPUs asked for, but this machine has "
            f"{gpus}; allowed here: 1..{gpus}"
        )
    if hw.accelerator == "tpu" and _has_tpu() is False:
        raise ConfigError(
            f"{source}: hardware.accelerator: 'tpu' asked for, but this machine has no TPU "
            f"(no /dev/accel* or /dev/vfio device, no TPU_NAME); allowed here: "
            f"{'auto, cpu or gpu' if gpus else 'auto or cpu'}"
        )
    on_gpu = hw.accelerator == "gpu" or (hw.accelerator == "auto" and bool(gpus))
    if hw.precision == "16" and hw.accelerator == "auto" and gpus == 0:
        raise ConfigError(
            f"{source}: hardware.precision: '16' (float16 mixed) needs a GPU, and this machine "
            "has none (accelerator 'auto' runs on the CPU); allowed here: '32' or 'bf16'"
        )
    if hw.precision == "bf16" and on_gpu and gpus:
        problem = _bf16_problem(gpus)
        if problem:
            raise ConfigError(
                f"{source}: hardware.precision: 'bf16' asked for, but {problem}; "
                "allowed here: '32' or '16'"
            )


def check_metrics(ctx: Any) -> None:
    """Every objective and constraint must be a metric this dataset can produce."""
    task = ctx.dataset.task
    study = ctx.cfg.study
    for i, (metric, _) in enumerate(ctx.objectives):
        problem = metric_task_problem(metric, task)
        if problem is None:
            continue
        if study.objectives:
            raise ConfigError(f"{ctx.config_path}: study.objectives.{i}.metric: {problem}")
        raise ScriptError(f"{ctx.script_path}: @experiment(metric={metric!r}): {problem}")
    for i, (metric, _, _) in enumerate(ctx.constraints):
        problem = metric_task_problem(metric, task)
        if problem is not None:
            raise ConfigError(f"{ctx.config_path}: study.constraints.{i}: {problem}")


def check_store_path(path: Path, field: str, kind: str = "file") -> None:
    """A local store's path: not a folder, below folders only, in a writable place."""
    if path.is_dir() and kind == "file":
        raise StorageError(f"{field}: {path} is a directory; allowed: a file path")
    probe = path if path.exists() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir() and probe != path:
        raise StorageError(f"{field}: {path} lies below {probe}, which is a file, not a directory")
    target = path if path.exists() else probe
    if not os.access(target, os.W_OK):
        raise StorageError(
            f"{field}: {path} cannot be written ({target} is not writable by this user)"
        )


def _settled_size(path: Path) -> int:
    """The file's size once no process is creating it. A fresh SQLite store has no header
    yet (0 bytes) while another worker, holding the store's lock, creates its tables: wait
    for that lock, then look again; a file still empty then is one."""
    from protolab._lock import lock_for, wait_unlocked

    size = path.stat().st_size
    if size < 100:  # SQLite's header is 100 bytes
        wait_unlocked(lock_for(path))
        size = path.stat().st_size
    return size


def check_sqlite_file(path: Path, field: str, what: str) -> None:
    """An existing SQLite store must be whole: empty or truncated files are refused."""
    if not path.is_file():
        return
    size = _settled_size(path)
    hint = f"move it away to start a new {what}, or restore it from a backup"
    if size == 0:
        raise StorageError(
            f"{field}: {path} is empty (0 bytes), not a {what}: was it truncated? "
            f"protolab will not replace it silently; {hint}"
        )
    with path.open("rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise StorageError(f"{field}: {path} is not an SQLite database ({size} bytes); {hint}")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("PRAGMA quick_check").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StorageError(f"{field}: {path} is damaged ({e}); {hint}") from None
    if row is None or row[0] != "ok":
        detail = short(row[0] if row else "no answer", 120)
        raise StorageError(f"{field}: {path} is damaged (quick_check: {detail}); {hint}")


def check_tracking_uri(cfg_uri: str | None, default: str) -> None:
    """The tracking store: a URI from the environment is checked (and blamed) as such."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    field = "tracking.uri" if cfg_uri else "$MLFLOW_TRACKING_URI" if env else "tracking.uri"
    uri = cfg_uri or env or default
    if cfg_uri is None and env and _scheme(env) not in TRACKING_SCHEMES:
        raise StorageError(
            f"$MLFLOW_TRACKING_URI (from the environment; tracking.uri is not set): unsupported "
            f"URI {short(_redacted(env))}; allowed: sqlite:///FILE, http(s)://HOST:PORT, "
            "postgresql://..., or unset it for sqlite:///mlruns/mlflow.db"
        )
    if uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not path or path == ":memory:":
            raise StorageError(
                f"{field}: {short(uri)} names no file; allowed: sqlite:///PATH/mlflow.db"
            )
        check_store_path(Path(path), field)
        check_sqlite_file(Path(path), field, "MLflow store")
    elif uri.startswith("file:"):
        check_store_path(Path(uri.removeprefix("file://")), field, kind="dir")


def check_context(ctx: Any) -> None:
    """Everything knowable before training, given a prepared sweep context (read-only)."""
    from protolab._stores import check_storage_url
    from protolab.tracking import default_tracking_uri

    check_hardware(ctx.cfg.hardware, str(ctx.config_path))
    check_metrics(ctx)
    problem = check_train_task(ctx)  # train options this dataset / script cannot run
    if problem:
        raise ConfigError(f"{ctx.config_path}: train.{problem}")
    try:
        check_storage_url(ctx.cfg.study.storage)
        check_tracking_uri(ctx.cfg.tracking.uri, default_tracking_uri())
    except StorageError as e:
        raise StorageError(f"{ctx.config_path}: {e}") from None


def check_values(ctx: Any, values: dict[str, Any], source: str) -> None:
    """Fixed values (``--params``, ``--best``) must be names this script and config take.

    A name the space never asks for would be ignored silently (a typo, or a parameter
    renamed since the best trial ran) and a value outside the current range would fail
    only after the run exists; both are refused here, with the names that are allowed.
    """
    from protolab.errors import SpaceError
    from protolab.space import Space
    from protolab.sweep._context import sample_train

    arch, train = Space(values=values), Space(values=values, prefix="train.")
    try:
        ctx.experiment.build(arch)
        sample_train(ctx.cfg.train, train)
    except SpaceError as e:
        raise SpaceError(f"{source}: {e}") from None
    except Exception:  # the script's own error or an impossible Arch: the run reports it
        return
    taken = {*arch.values, *(f"train.{k}" for k in train.values)}
    unknown = sorted(k for k in values if k not in taken)
    if unknown:
        allowed = ", ".join(sorted(taken)) or "none (the script declares no choices)"
        fixed = [k for k in unknown if k.startswith("train.")]
        hint = (
            f"; {fixed[0]} is a fixed value in the config, set it there"
            if fixed and fixed[0].removeprefix("train.") in type(ctx.cfg.train).model_fields
            else ""
        )
        raise SpaceError(
            f"{source}: {short(unknown[0], 80)} is not a choice of experiment "
            f"'{ctx.experiment.name}' ({ctx.script_path}) with these values; "
            f"allowed: {allowed}{hint}"
        )
