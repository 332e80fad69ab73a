"""What each rerun reads afresh: the config, the script (in a fresh namespace), its modules.

Every load re-executes the experiment script as a new module and first drops the local
modules it imported last time (files under the script's folder that are not installed
packages), so an edit to a helper module takes effect too. Those files, the script and the
config are what the watcher watches; their bytes make the fingerprint that tells a real
edit from an editor touching a file.
"""

from __future__ import annotations

import hashlib
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolab.errors import ScriptError
from protolab.sweep._context import SweepContext

__all__ = ["Loaded", "Source", "fingerprint", "user_traceback"]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # protolab itself is never "local"


@dataclass(frozen=True)
class Loaded:
    """One successful load: the prepared context and the values the rerun trains with."""

    ctx: SweepContext
    values: dict[str, Any]


@dataclass
class Source:
    """The config (with its overrides) and the script it names, loaded on demand."""

    config: Path
    overrides: list[str]
    values: dict[str, Any]
    values_from: str  # "--params" or "--best (...)": named in messages
    script: Path | None = None
    local: dict[str, Path] = field(default_factory=dict)  # module name -> file

    def files(self) -> list[Path]:
        """The files a save of which triggers a rerun."""
        files = [self.config.resolve()]
        if self.script is not None:
            files.append(self.script)
        return files + sorted(set(self.local.values()) - set(files))

    def load(self) -> Loaded:
        """Config and script afresh; raises a ``UserInputError`` saying what is wrong."""
        from protolab.backends import NAMES
        from protolab.config import load_config
        from protolab.sweep import prepare
        from protolab.sweep._checks import check_context, check_values

        for name in self.local:  # a fresh namespace: the script's helpers re-import
            sys.modules.pop(name, None)
        before = set(sys.modules)
        try:
            cfg, script = load_config(self.config, self.overrides, backends=NAMES)
            self.script = script.resolve()
            ctx = prepare(cfg, self.config, script)
        except ScriptError as e:
            raise ScriptError(f"{e}{self._frames(e)}") from None
        finally:
            self.local = _local_modules(set(sys.modules) - before, self.script)
        check_context(ctx)
        check_values(ctx, self.values, self.values_from)
        return Loaded(ctx, dict(self.values))

    def _frames(self, error: ScriptError) -> str:
        """The user's own frames for an error the experiment function raised.

        ``prepare`` names only the deepest line; running the function once more (with the
        defaults, as its dry run did) recovers the traceback through the user's files.
        """
        if "raised" not in str(error) or "\n  " in str(error) or self.script is None:
            return ""  # not the function's own error, or its frames are shown already
        from protolab.script import load_experiment
        from protolab.space import Space

        try:
            load_experiment(self.script).build(Space())
        except Exception as e:
            frames = user_traceback(e, self.files()).splitlines()[1:]
            return "".join(f"\n{line}" for line in frames)
        return ""


def _local_modules(names: set[str], script: Path | None) -> dict[str, Path]:
    """Modules among ``names`` whose file lies under the script's folder, not installed."""
    if script is None:
        return {}
    root = script.parent
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out: dict[str, Path] = {}
    for name in names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path or name.startswith("protolab_experiment_"):
            continue
        file = Path(path).resolve()
        inside = file.is_relative_to(root) and file.suffix == ".py"
        installed = "site-packages" in file.parts or any(file.is_relative_to(p) for p in prefixes)
        if inside and not installed and not file.is_relative_to(_PACKAGE_DIR):
            out[name] = file
    return out


def fingerprint(files: list[Path]) -> str:
    """A hash over the files' paths and bytes (a missing file counts as empty)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file).encode())
        try:
            digest.update(file.read_bytes())
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()[:16]


def user_traceback(exc: BaseException, files: list[Path], limit: int = 8) -> str:
    """``exc`` as its type and message plus the frames inside the user's own files."""
    mine = {f.resolve() for f in files}
    lines = []
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() in mine:
            code = (frame.line or "").strip()[:160]
            lines.append(f"  {Path(frame.filename).name}:{frame.lineno} in {frame.name}: {code}")
    text = str(exc).strip()
    head = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return "\n".join([head, *lines[-limit:]])
