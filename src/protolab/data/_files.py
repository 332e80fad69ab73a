"""User data files: ``.npz`` and ``.csv``, resolved relative to the experiment script.

Paths are relative to the script's folder (not the shell's working directory) so an
experiment runs the same from anywhere. CSV is parsed with the standard ``csv`` module rather
than ``np.genfromtxt`` because genfromtxt turns a bad cell into a silent NaN, and we want to
say which line and column is wrong.
"""

from __future__ import annotations

import csv
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from protolab.data._dataset import Dataset, from_arrays, from_split
from protolab.errors import DataError

__all__ = ["SUFFIXES", "load_file", "resolve_path"]

SUFFIXES = (".npz", ".csv")
_SINGLE = ("x", "y")
_SPLIT = ("x_train", "y_train", "x_val", "y_val")
_INT = re.compile(r"[+-]?\d+")


def resolve_path(spec: str, base_dir: Path | None) -> Path:
    """Absolute path of ``spec``: as is when absolute, else under ``base_dir`` (or the cwd)."""
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return path.resolve()


def load_file(spec: str, base_dir: Path | None, *, seed: int, val_fraction: float) -> Dataset:
    """Load a user file; ``name`` is ``spec`` as given so tags match what the user wrote."""
    suffix = Path(spec).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"data file '{spec}': unsupported extension '{suffix or '(none)'}'; "
            f"allowed: {', '.join(SUFFIXES)}"
        )
    path = resolve_path(spec, base_dir)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        hint = "" if Path(spec).expanduser().is_absolute() else " (relative to the script folder)"
        raise DataError(f"data file '{spec}' {what}: looked for {path}{hint}")
    where = f"data file '{spec}'"
    if suffix == ".npz":
        return _load_npz(spec, path, where, seed=seed, val_fraction=val_fraction)
    x, y = _read_csv(path, where)
    return from_arrays(spec, x, y, where=where, seed=seed, val_fraction=val_fraction)


def _load_npz(spec: str, path: Path, where: str, *, seed: int, val_fraction: float) -> Dataset:
    """Either ``x``/``y`` (we split) or ``x_train``/``y_train``/``x_val``/``y_val`` (given).

    A file holding both layouts is refused rather than guessed at: the two could disagree.
    """
    with path.open("rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not zipfile.is_zipfile(path):
        raise DataError(
            f"{where}: cannot be read as .npz (not a zip archive: starts {magic!r:.20})"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy array (or pickle) renamed
            raise DataError(
                f"{where}: is a single .npy array, not an .npz archive; save one with "
                "np.savez(path, x=..., y=...)"
            )
        with loaded as archive:
            keys = sorted(archive.files)
            has_single = all(k in keys for k in _SINGLE)
            has_split = all(k in keys for k in _SPLIT)
            if has_single == has_split:
                problem = "has both key sets" if has_single else "is missing keys"
                raise DataError(
                    f"{where}: {problem}; found keys {keys}; allowed: exactly one of "
                    f"{list(_SINGLE)} or {list(_SPLIT)}"
                )
            arrays = {k: archive[k] for k in (_SINGLE if has_single else _SPLIT)}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{where}: cannot be read as .npz ({reason})") from exc
    if has_single:
        return from_arrays(
            spec, arrays["x"], arrays["y"], where=where, seed=seed, val_fraction=val_fraction
        )
    return from_split(spec, *(arrays[k] for k in _SPLIT), where=where)


def _read_csv(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Header row, a ``target`` column, every other column a numeric feature.

    The target is classification when every cell is an integer literal (``3``, ``-1``) and
    regression as soon as one has a decimal point or exponent (``3.0``, ``1e2``): the user
    decides by how they write the column, as with an integer vs float array in ``.npz``.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{where}: is not valid CSV ({exc})") from exc
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{where}: is empty; need a header row with a 'target' column and data")
    header = [c.strip() for c in rows[0]]
    if header.count("target") != 1:
        found = "several 'target' columns" if "target" in header else "no 'target' column"
        raise DataError(f"{where}: has {found}; columns found: {header}; need exactly one")
    t = header.index("target")
    if len(header) < 2:
        raise DataError(f"{where}: has only the 'target' column; need at least one feature column")
    body = [(i, r) for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    if not body:
        raise DataError(f"{where}: has a header but no data rows")
    features: list[list[float]] = []
    targets: list[str] = []
    for line, row in body:
        if len(row) != len(header):
            raise DataError(
                f"{where}: line {line} has {len(row)} fields but the header has {len(header)}"
            )
        cells = [c.strip() for c in row]
        features.append([_number(c, line, header[j], where) for j, c in enumerate(cells) if j != t])
        targets.append(cells[t])
    if all(_INT.fullmatch(c) for c in targets):
        try:
            y = np.array([int(c) for c in targets], dtype=np.int64)
        except OverflowError:
            raise DataError(
                f"{where}: column 'target' has an integer label beyond the int64 range; "
                f"write it as float for regression"
            ) from None
    else:
        y = np.array(
            [_number(c, ln, "target", where) for (ln, _), c in zip(body, targets, strict=True)],
            dtype=np.float32,
        )
    return np.array(features, dtype=np.float32), y


def _number(cell: str, line: int, column: str, where: str) -> float:
    """Parse one cell, naming its line and column when it is not a finite number."""
    try:
        value = float(cell)
    except ValueError:
        shown = repr(cell) if cell else "an empty cell"
        raise DataError(
            f"{where}: line {line}, column '{column}': {shown} is not a number; "
            f"every column must be numeric"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f"{where}: line {line}, column '{column}': {cell!r} is NaN or inf; "
            f"allowed: finite numbers only"
        )
    return value
