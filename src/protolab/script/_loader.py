"""Load an experiment script from a path, without installing it as a package."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from protolab.data import collecting
from protolab.errors import ScriptError
from protolab.script import _experiment
from protolab.script._experiment import Experiment

__all__ = ["load_experiment", "script_hash"]


def script_hash(path: Path) -> str:
    """12 hex chars of sha256 over the script bytes: which version of the script ran."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _user_frame(exc: BaseException, path: Path) -> str:
    """``file:line`` of the deepest frame inside the user's script, for one-line errors."""
    where = str(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path:
            where = f"{path}:{frame.lineno}"
    return where


def user_lines(exc: BaseException, path: Path, limit: int = 6) -> str:
    """The script's own frames of ``exc``'s traceback, one indented line each (no internals)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    lines = [
        f"\n  {path.name}:{f.lineno} in {f.name}: {(f.line or '').strip()[:160]}"
        for f in frames[-limit:]
    ]
    return "".join(lines)


def exit_error(exc: SystemExit, where: str, during: str) -> ScriptError:
    """``sys.exit()`` inside a script: protolab would exit with the script's code, silently."""
    return ScriptError(
        f"{where + ': ' if where else ''}{during} called sys.exit({short_code(exc.code)}); "
        "an experiment script must not exit: raise an exception, or guard script code "
        "with `if __name__ == '__main__':`"
    )


def short_code(code: object) -> str:
    text = repr(code) if code is not None else ""
    return text if len(text) <= 80 else text[:80] + "..."


def load_experiment(path: str | Path) -> Experiment:
    """Execute the script at ``path`` and return its single ``@experiment``.

    Only the script the user named is executed. Errors (syntax, import, zero or several
    experiments) become :class:`ScriptError` with ``file:line``, never a traceback.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ScriptError(f"experiment script {path} does not exist")
    if path.suffix != ".py":
        raise ScriptError(f"experiment script {path} must be a .py file, but got '{path.suffix}'")
    module_name = f"protolab_experiment_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ScriptError(f"experiment script {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    found: list[Experiment] = []
    previous = _experiment._registry
    _experiment._registry = found
    sys.path.insert(0, str(path.parent))  # let scripts import their sibling modules
    sys.modules[module_name] = module
    try:
        with collecting() as datas:
            spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ScriptError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except ScriptError as e:
        raise ScriptError(f"{path}: {e}") from None
    except SystemExit as e:
        raise exit_error(e, _user_frame(e, path), "loading the script") from None
    except Exception as e:
        text = str(e)
        text = text if len(text) <= 300 else text[:300] + "..."
        raise ScriptError(
            f"{_user_frame(e, path)}: loading the script raised {type(e).__name__}: {text}"
            + user_lines(e, path)
        ) from None
    finally:
        _experiment._registry = previous
        sys.path.remove(str(path.parent))
    if not found:
        raise ScriptError(
            f"{path} declares no experiment: decorate one function with @protolab.experiment"
        )
    if len(found) > 1:
        names = ", ".join(e.name for e in found)
        raise ScriptError(f"{path} declares {len(found)} experiments ({names}); exactly 1 allowed")
    if len(datas) > 1:
        names = ", ".join(d.name for d in datas)
        raise ScriptError(f"{path} declares {len(datas)} @data functions ({names}); at most 1")
    return replace(found[0], source=str(path), data_fn=datas[0] if datas else None)
