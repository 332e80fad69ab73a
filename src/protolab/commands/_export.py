"""``protolab export``: a study's kept checkpoint as a servable model.

The checkpoint (a trial's trained weights on one mode, kept by ``tracking.checkpoints``) is
rebuilt by its backend and written in the format asked for. Which formats a mode writes is
declared by the backend and looked up through the registry. Every bad input (unknown
format, backend, study or trial; a format the mode cannot write) stops with exit 2 before
anything is written.

The tracking store may be shared, so what it says is checked before it names a path: the
study and mode tags that make the default folder (``exports/STUDY/tN-MODE-FORMAT``) must
pass the rule ``study.name`` passes on input (no separator, no ``..``, not absolute), and
an existing non-empty folder is written into only when it is an export already (it holds
``protolab.json``) or with ``--force``. What is loaded is the kept checkpoint, read as data
(see :func:`protolab.commands._rebuild.load_kept`); no code from the store runs.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protolab._tags import TAG
from protolab.errors import UserInputError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from protolab.backends import ExportableModel
    from protolab.checkpoint import CheckpointTrial

__all__ = ["ALIAS", "Exported", "export_model", "open_study_store"]

ALIAS = "champion"  # the registry alias on the study's best trial


@dataclass
class Exported:
    """What an export wrote: a path (local formats) or a registered model version."""

    study: str
    trial: int
    backend: str
    fmt: str
    seconds: float
    path: Path | None = None
    model_uri: str = ""
    champion: bool = False
    note: str = ""


def _check_request(fmt: str, backend: str | None, out: Path | None) -> None:
    from protolab.backends import all_formats, backend_names

    formats = all_formats()
    if fmt not in formats:
        raise UserInputError(f"--format: unknown format {fmt!r}; allowed: {', '.join(formats)}")
    if backend is not None and backend not in backend_names():
        raise UserInputError(
            f"--backend: unknown backend {backend!r}; allowed: {', '.join(backend_names())}"
        )
    if fmt == "mlflow" and out is not None:
        raise UserInputError(
            f"--out: --format mlflow logs the model to the tracking store and registers it, "
            f"so it takes no folder (got {out}); drop --out"
        )
    blocker = next((p for p in (out, *out.parents) if p.exists()), None) if out else None
    if blocker is not None and not blocker.is_dir():
        raise UserInputError(f"--out: {blocker} is a file; allowed: a folder (new or existing)")


def _store_name(value: str, tag: str) -> str:
    """A name read from the tracking store, checked before it names a folder (exit 2)."""
    from protolab._format import short
    from protolab.config import check_study_name

    try:
        return check_study_name(value)
    except ValueError:
        raise UserInputError(
            f"tracking store: tag {tag} holds {short(value)}, which would name a folder "
            "outside exports/; allowed: 1-100 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit, without '..' (the study.name rule); refused, nothing written"
        ) from None


def _check_folder(folder: Path, force: bool, given: bool) -> None:
    """Write only into a new or empty folder, or an export already (or with ``--force``)."""
    from protolab.backends import EXPORT_META

    if force or not folder.is_dir() or (folder / EXPORT_META).is_file():
        return
    if next(folder.iterdir(), None) is None:
        return
    where = "--out" if given else "the export folder"
    raise UserInputError(
        f"{where}: {folder} is not empty and holds no {EXPORT_META} (not a protolab "
        "export), so writing there could overwrite your files; pick a new or empty folder, "
        "or add --force"
    )


def _resolve(target: str, uri: str | None) -> tuple[str, str, str | None]:
    """A study name or a YAML config -> (study, tracking URI, MLflow experiment name)."""
    from protolab.tracking import default_tracking_uri

    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        from protolab.backends import NAMES
        from protolab.config import load_config

        cfg, _ = load_config(Path(target), backends=NAMES)
        assert cfg.study.name is not None
        tracking = uri or cfg.tracking.uri or default_tracking_uri()
        return cfg.study.name, tracking, cfg.tracking.experiment
    return target, uri or default_tracking_uri(), None


def open_study_store(target: str, uri: str | None) -> tuple[str, MlflowClient, str]:
    """(study, MlflowClient, experiment id) for a study name or config; exit 2 if unknown."""
    from protolab.commands._studies import check_store, mlflow_client, study_experiments
    from protolab.tracking import redact

    study, tracking, experiment = _resolve(target, uri)
    check_store(tracking)
    client = mlflow_client(tracking)
    found = study_experiments(client)
    for s in found:
        if study in (s.study, s.experiment_name) or (
            experiment and s.experiment_name == experiment
        ):
            return s.study, client, s.experiment_id
    have = ", ".join(sorted(s.study for s in found)) or "none yet (run `protolab sweep CONFIG`)"
    raise UserInputError(f"STUDY: no study {study!r} in {redact(tracking)}; studies there: {have}")


def _pick_trial(
    trials: dict[int, CheckpointTrial], trial: int | None, study: str
) -> CheckpointTrial:
    from protolab.checkpoint import ranked

    if not trials:
        raise UserInputError(
            f"study {study!r} has no kept checkpoint: its trials ran with "
            "tracking.checkpoints=none, or before checkpoints existed; sweep it again"
        )
    listed = ", ".join(f"t{n}" for n in sorted(trials))
    if trial is None:
        done = [t for t in trials.values() if t.done] or list(trials.values())
        return ranked(done)[0]
    if trial not in trials:
        raise UserInputError(
            f"--trial: trial {trial} of {study!r} has no kept checkpoint (tracking.checkpoints "
            f"keeps the best few); trials with one: {listed}"
        )
    return trials[trial]


def _pick_run(chosen: CheckpointTrial, backend: str | None, fmt: str) -> Run:
    """The run (mode) to export: ``backend``, else the first one that writes ``fmt``."""
    from protolab.backends import backend_formats

    have = chosen.backends
    if backend is not None:
        run = chosen.run_for(backend)
        if run is None:
            raise UserInputError(
                f"--backend: trial {chosen.trial} has no checkpoint on {backend!r}; "
                f"it has: {', '.join(have)}"
            )
        if fmt not in backend_formats(backend):
            can = ", ".join(backend_formats(backend)) or "none"
            raise UserInputError(
                f"--format: backend {backend!r} cannot write {fmt!r}; it writes: {can}"
            )
        return run
    for run in chosen.runs:
        if fmt in backend_formats(str(run.data.tags.get(TAG.BACKEND))):
            return run
    can = "; ".join(f"{b}: {', '.join(backend_formats(b)) or 'none'}" for b in have)
    raise UserInputError(
        f"--format: trial {chosen.trial} ran on {', '.join(have)}, and none writes {fmt!r} "
        f"({can}); pick another format"
    )


def export_model(
    target: str,
    fmt: str,
    trial: int | None = None,
    backend: str | None = None,
    out: Path | None = None,
    uri: str | None = None,
    name: str | None = None,
    config: Path | None = None,
    force: bool = False,
) -> Exported:
    """Export one kept checkpoint of study ``target`` as ``fmt``.

    ``config`` (or ``target`` itself, when it is a config) names the local script that
    rebuilds a native model; see :mod:`protolab.commands._rebuild`. ``force``: write into
    a non-empty folder that is not an export.
    """
    from protolab.checkpoint import download, find_checkpoints
    from protolab.commands._rebuild import load_kept, rebuild_native

    _check_request(fmt, backend, out)
    study, client, experiment_id = open_study_store(target, uri)
    study = _store_name(study, TAG.STUDY)
    trials = find_checkpoints(client, experiment_id, study)
    chosen = _pick_trial(trials, trial, study)
    run = _pick_run(chosen, backend, fmt)
    mode = _store_name(str(run.data.tags[TAG.BACKEND]), TAG.BACKEND)
    folder = out or Path("exports") / study / f"t{chosen.trial}-{mode}-{fmt}"
    if fmt != "mlflow":
        _check_folder(folder, force, out is not None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="protolab-export-") as tmp:
        ckpt = download(client, run.info.run_id, Path(tmp))
        local = config or (Path(target) if target.endswith((".yaml", ".yml")) else None)
        retry = f"protolab export {study} --format {fmt} --trial {chosen.trial} --backend {mode}"
        arch = rebuild_native(ckpt, run, local, f"{retry} --config CONFIG.yaml")
        if arch is not None and fmt == "hub":  # hubconf.py rebuilds from arch.json
            raise UserInputError(
                "--format: a hub folder rebuilds its model from arch.json, which a native "
                "model (pl.native) cannot; export it as pt2 or onnx"
            )
        model = load_kept(ckpt, arch, f"trial {chosen.trial} ({mode})")
        done = Exported(study, chosen.trial, mode, fmt, 0.0)
        if fmt == "mlflow":
            _register(client, run, model, ckpt, trials, name or study, done)
        else:
            done.path = model.export(fmt, folder, ckpt)
            _write_meta(folder, done, run, ckpt)
    done.seconds = time.perf_counter() - t0
    return done


def _write_meta(folder: Path, done: Exported, run: Run, ckpt: Path) -> None:
    """``protolab.json`` beside the export: what it is, so ``protolab predict DIR`` reads it."""
    from protolab._version import __version__
    from protolab.backends import EXPORT_META, read_meta

    meta = read_meta(ckpt)
    assert done.path is not None
    info = {
        "format": done.fmt,
        "backend": done.backend,
        "path": str(done.path.relative_to(folder)) if done.path != folder else ".",
        "study": done.study,
        "trial": done.trial,
        "run_id": run.info.run_id,
        "metric": meta.metric,
        "value": meta.value,
        "input_shape": list(meta.input_shape),
        "input_dtype": meta.input_dtype,
        "output_shape": list(meta.output_shape),
        "task": meta.task,
        "arch_hash": meta.arch_hash,
        "protolab": __version__,
    }
    (folder / EXPORT_META).write_text(json.dumps(info, indent=2))


def _register(
    client: MlflowClient,
    run: Run,
    model: ExportableModel,
    ckpt: Path,
    trials: dict[int, CheckpointTrial],
    name: str,
    done: Exported,
) -> None:
    """Log the MLflow Model into the trial's run, register it, and move the alias if best."""
    from protolab.checkpoint import ranked

    local = ckpt.parent / "mlflow-model"
    model.export("mlflow", local, ckpt)
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(local), "model")
    if not client.search_registered_models(f"name = '{_quote(name)}'"):
        client.create_registered_model(name, tags={TAG.STUDY: done.study})
    same = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'")
    version = same[0] if same else None
    if version is None:
        tags = {TAG.STUDY: done.study, TAG.TRIAL: str(done.trial), TAG.BACKEND: done.backend}
        source = f"{run.info.artifact_uri}/model"
        version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    done.model_uri = f"models:/{name}/{version.version}"
    best = ranked([t for t in trials.values() if t.done] or trials.values())[0]
    if best.trial == done.trial:
        client.set_registered_model_alias(name, ALIAS, version.version)
        done.champion = True
    else:
        done.note = f"alias {ALIAS} stays put: t{best.trial} is the study's best"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
