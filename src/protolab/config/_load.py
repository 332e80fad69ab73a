"""Read a YAML config, apply ``dotted.key=value`` overrides, validate, explain errors.

Every failure is a :class:`ConfigError` naming the file, the dotted field, the value received
and what is allowed, so the CLI can print one line and exit 2 before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from protolab._format import short
from protolab.config import _model, _yaml
from protolab.config._model import BackendNames, Config, safe_study_name
from protolab.errors import ConfigError

__all__ = ["apply_overrides", "config_hash", "load_config"]


def _parse_value(text: str, source: str) -> Any:
    """Override values are YAML (``[static]``, ``5``, ``{low: 1, high: 2}``, ``null``)."""
    try:
        value = _yaml.parse(text, source) if text.strip() else ""
    except yaml.YAMLError:
        return text  # not YAML: keep the raw text, validation says what was expected
    if isinstance(value, dict) and not text.strip().startswith("{"):
        return text  # `sqlite:///:memory:` is a URL, not the block mapping YAML reads
    return value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied (values parsed as YAML)."""
    data = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"{source}: override {short(item)} must look like dotted.key=value "
                "(e.g. study.n_trials=5 or backends=[static])"
            )
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"{source}: override {short(item)}: '{where}' is {short(child)}, not a section"
                )
            node = child
        node[parts[-1]] = _parse_value(text, f"{source}: override {key}")
    return data


def _allowed_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys a (nested) section accepts, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    return sorted(getattr(current, "model_fields", {}))


def _is_member_tag(part: int | str) -> bool:
    """Union members add their type to an error's loc ("train.lr.Range"); users never wrote it."""
    return isinstance(part, str) and (
        part[:1].isupper() or "[" in part or part in ("float", "int", "str", "bool")
    )


def _member_model(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The config model of the union member an error comes from (Range, Choice), if any."""
    for part in loc:
        if _is_member_tag(part):
            name = re.sub(r"\W+$", "", str(part)).rsplit(" ", 1)[-1].rsplit("[", 1)[-1]
            model = getattr(_model, name, None)
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model
    return None


def _explain(err: ValidationError, source: str) -> str:
    errors = err.errors()
    # How badly each union member missed (keys it does not have first, then distinct
    # fields wrong): the closest one is what was meant.
    misses: dict[tuple[str, str], set[str]] = {}
    for e in errors:
        key = _field_key(e["loc"])
        member = _member_model(e["loc"])
        tag = (key, member.__name__ if member else "")
        where = ".".join(str(p) for p in e["loc"] if not _is_member_tag(p))
        misses.setdefault(tag, set()).add(f"{where}{'!' if e['type'] == 'extra_forbidden' else ''}")
    per_member = {t: (sum(m.endswith("!") for m in v), len(v)) for t, v in misses.items()}
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for e in errors:
        loc = [p for p in e["loc"] if not _is_member_tag(p)]
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        key = _field_key(e["loc"])
        got = e.get("input")
        member = _member_model(e["loc"])
        if e["type"] == "extra_forbidden":
            keys = sorted(member.model_fields) if member else _allowed_keys(Config, loc)
            line = f"{dotted}: unknown key (got {short(got)}); allowed keys here: {', '.join(keys)}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            line = f"{dotted}: {msg if 'but got' in msg else f'{msg} (got {short(got)})'}"
        # Our own rule checks first; then the union member shaped like the input (a mapping
        # for Range/Choice) that has the fewest errors.
        rank = 0 if e["type"] == "value_error" else 1
        if (member is not None) != isinstance(got, dict) and not (member and dotted != key):
            rank = 2
        score = (rank, *per_member[(key, member.__name__ if member else "")])
        if key not in found or score < found[key][0]:
            found[key] = (score, line)
    lines = [line for _, line in found.values()]
    more = f" (and {len(lines) - 1} more: {', '.join(list(found)[1:])})" if len(lines) > 1 else ""
    return f"{source}: {lines[0]}{more}"


def _field_key(loc: Sequence[int | str]) -> str:
    """The dotted field the user wrote: the loc up to the first union-member tag."""
    cut = next((i for i, p in enumerate(loc) if _is_member_tag(p)), len(loc))
    return ".".join(str(p) for p in loc[:cut]) or "(top level)"


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, backends: BackendNames
) -> tuple[Config, Path]:
    """Load and validate ``path`` with overrides; returns the config and the script path.

    The experiment path is resolved relative to the config file and must exist.
    ``backends`` is the backend registry (``protolab.backends.NAMES``): the config checks
    names against it and takes its default, without importing a backend itself.
    """
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, but got {type(raw).__name__}")
    data = apply_overrides(raw, overrides, str(path))
    try:
        cfg = Config.model_validate(data, context={"backends": backends})
    except ValidationError as e:
        raise ConfigError(_explain(e, str(path))) from None
    except RecursionError:
        raise ConfigError(f"{path}: a value is nested too deeply to be a config") from None
    script = cfg.experiment if cfg.experiment.is_absolute() else path.parent / cfg.experiment
    script = script.resolve()
    if not script.is_file():
        what = "is a directory" if script.is_dir() else "does not exist"
        raise ConfigError(
            f"{path}: experiment: script {script} {what} (got {short(str(cfg.experiment))}; "
            "paths are relative to the config file)"
        )
    if cfg.study.name is None:
        name = safe_study_name(path.stem)
        cfg = cfg.model_copy(update={"study": cfg.study.model_copy(update={"name": name})})
    return cfg, script


def _read(path: Path) -> Any:
    """The parsed YAML of a config file; every way it can be unreadable is a ConfigError."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give the YAML file inside it")
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file"
        raise ConfigError(f"config file {path} {what}")
    try:
        _yaml.check_size(str(path), path.stat().st_size)
        return _yaml.parse(path.read_text(encoding="utf-8"), str(path)) or {}
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or e)[:200]
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected YAML in UTF-8)") from None


# Keys that steer a sweep (how long, where it is stored) without changing what a trial does.
_NOT_HASHED = {
    "study": {"n_trials", "timeout_s", "max_failures", "max_retries", "storage", "heartbeat_s"},
    "tracking": {"uri", "experiment", "checkpoints", "top_k"},  # what is kept, not computed
    # how a worker runs (and where its compiles are cached), not what a trial computes
    "hardware": {
        *("threads", "recycle_after"),
        *("compile_cache", "compile_cache_max_mb", "compile_cache_sync"),
    },
}


def config_hash(cfg: Config) -> str:
    """12 hex chars over what a trial depends on in the resolved config (overrides included).

    Budget, storage and thread-count keys are left out, so topping a study up
    (``study.n_trials=50``) or adding a worker is not reported as a config change; the
    script path is left out too (its content is hashed separately).
    """
    data = cfg.model_dump(mode="json")
    data.pop("experiment", None)
    if data.get("data") is None:  # unset: the hash configs had before the key existed
        data.pop("data", None)
    for section, keys in _NOT_HASHED.items():
        for key in keys:
            data.get(section, {}).pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
