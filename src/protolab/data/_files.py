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
_TEST = ("x_test", "y_test")  # optional with either layout
_SPLIT_COLUMN = "split"  # optional CSV column: train / val / test per row
_SPLIT_VALUES = ("train", "val", "test")
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
    x, y, split = _read_csv(path, where)
    if split is None:
        return from_arrays(spec, x, y, where=where, seed=seed, val_fraction=val_fraction)
    return _csv_split(spec, x, y, split, where, seed=seed, val_fraction=val_fraction)


def _csv_split(
    spec: str,
    x: np.ndarray,
    y: np.ndarray,
    split: np.ndarray,
    where: str,
    *,
    seed: int,
    val_fraction: float,
) -> Dataset:
    """Rows marked ``test`` are the test split; ``val`` rows, if any, the validation split
    (as ``x_val`` in an .npz), else a seeded one is taken from the ``train`` rows."""
    rows = {v: split == v for v in _SPLIT_VALUES}
    if not rows["train"].any():
        raise DataError(
            f"{where}: column '{_SPLIT_COLUMN}' marks no row 'train'; need at least one "
            f"training row (values allowed: {', '.join(_SPLIT_VALUES)})"
        )
    test = (x[rows["test"]], y[rows["test"]]) if rows["test"].any() else None
    xt, yt = x[rows["train"]], y[rows["train"]]
    if rows["val"].any():
        xv, yv = x[rows["val"]], y[rows["val"]]
        return from_split(spec, xt, yt, xv, yv, where=where, test=test)
    return from_arrays(spec, xt, yt, where=where, seed=seed, val_fraction=val_fraction, test=test)


def _load_npz(spec: str, path: Path, where: str, *, seed: int, val_fraction: float) -> Dataset:
    """Either ``x``/``y`` (we split) or ``x_train``/``y_train``/``x_val``/``y_val`` (given),
    each optionally with ``x_test``/``y_test`` (the test split, never seen by a sweep).

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
            given = [k for k in _TEST if k in keys]
            if len(given) == 1:
                missing = next(k for k in _TEST if k not in keys)
                raise DataError(
                    f"{where}: has '{given[0]}' but no '{missing}'; found keys {keys}; "
                    f"a test split needs both {list(_TEST)} (or neither)"
                )
            wanted = (_SINGLE if has_single else _SPLIT) + (_TEST if given else ())
            arrays = {k: archive[k] for k in wanted}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{where}: cannot be read as .npz ({reason})") from exc
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    if has_single:
        return from_arrays(
            spec,
            arrays["x"],
            arrays["y"],
            where=where,
            seed=seed,
            val_fraction=val_fraction,
            test=test,
        )
    return from_split(spec, *(arrays[k] for k in _SPLIT), where=where, test=test)


def _read_csv(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Header row, a ``target`` column, an optional ``split`` column, the rest features.

    The target is classification when every cell is an integer literal (``3``, ``-1``) and
    regression as soon as one has a decimal point or exponent (``3.0``, ``1e2``): the user
    decides by how they write the column, as with an integer vs float array in ``.npz``.
    ``split`` (``train``/``val``/``test`` per row) is the CSV form of an .npz's split keys.
    """
    header, body = _csv_rows(path, where)
    t = header.index("target")
    sp = header.index(_SPLIT_COLUMN) if _SPLIT_COLUMN in header else None
    if len(header) - (sp is not None) < 2:
        raise DataError(f"{where}: has only the 'target' column; need at least one feature column")
    features: list[list[float]] = []
    targets: list[str] = []
    splits: list[str] = []
    for line, row in body:
        if len(row) != len(header):
            raise DataError(
                f"{where}: line {line} has {len(row)} fields but the header has {len(header)}"
            )
        cells = [c.strip() for c in row]
        features.append(
            [_number(c, line, header[j], where) for j, c in enumerate(cells) if j not in (t, sp)]
        )
        targets.append(cells[t])
        if sp is not None:
            splits.append(_split_cell(cells[sp], line, where))
    split = np.array(splits) if sp is not None else None
    return np.array(features, dtype=np.float32), _csv_target(targets, body, where), split


def _csv_rows(path: Path, where: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The stripped header (with exactly one ``target``) and the non-blank rows by line."""
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
    if header.count(_SPLIT_COLUMN) > 1:
        raise DataError(f"{where}: has several '{_SPLIT_COLUMN}' columns; allowed: at most one")
    body = [(i, r) for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    if not body:
        raise DataError(f"{where}: has a header but no data rows")
    return header, body


def _split_cell(cell: str, line: int, where: str) -> str:
    value = cell.lower()
    if value not in _SPLIT_VALUES:
        raise DataError(
            f"{where}: line {line}, column '{_SPLIT_COLUMN}': {cell!r} is not a split name; "
            f"allowed: {', '.join(_SPLIT_VALUES)} (the column is reserved for the split)"
        )
    return value


def _csv_target(targets: list[str], body: list[tuple[int, list[str]]], where: str) -> np.ndarray:
    """Integer labels when every cell is an integer literal, else float values."""
    if all(_INT.fullmatch(c) for c in targets):
        try:
            return np.array([int(c) for c in targets], dtype=np.int64)
        except OverflowError:
            raise DataError(
                f"{where}: column 'target' has an integer label beyond the int64 range; "
                f"write it as float for regression"
            ) from None
    return np.array(
        [_number(c, ln, "target", where) for (ln, _), c in zip(body, targets, strict=True)],
        dtype=np.float32,
    )


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
