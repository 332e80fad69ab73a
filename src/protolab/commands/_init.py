"""``protolab init NAME``: a new experiment script and config that sweep as written."""

from __future__ import annotations

import re
from pathlib import Path

from protolab.commands._templates import CONFIG, DATA, SCRIPTS, SIZES, TEMPLATES
from protolab.errors import UserInputError

__all__ = ["TEMPLATES", "init_project"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def _files(name: str, template: str, root: Path) -> dict[Path, str]:
    stem = name.replace("-", "_")
    data = f"{stem}.csv"
    script = f"{stem}.py"
    trials, epochs = SIZES[template]
    files = {
        root / "experiments" / script: SCRIPTS[template].format(name=name, data=data),
        root / "configs" / f"{name}.yaml": CONFIG.format(
            name=name, script=script, n_trials=trials, epochs=epochs
        ),
    }
    if template in DATA:
        files[root / "experiments" / data] = DATA[template]()
    return files


def init_project(name: str, template: str, root: Path, force: bool = False) -> list[Path]:
    """Write the files (refusing to overwrite unless ``force``); return their paths."""
    if not _NAME.fullmatch(name):
        raise UserInputError(
            f"NAME: {name!r} is not a study name; allowed: a letter, then letters, digits, "
            "'-' or '_' (at most 64)"
        )
    if template not in TEMPLATES:
        raise UserInputError(f"--template: {template!r}; allowed: {', '.join(TEMPLATES)}")
    files = _files(name, template, root)
    existing = [p for p in files if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing)
        raise UserInputError(f"{shown} already exists; pick another NAME or pass --force")
    blocker = next((p for p in files for q in p.parents if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise UserInputError(f"cannot write {blocker}: a parent folder is a file")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
