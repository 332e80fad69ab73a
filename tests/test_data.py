"""protolab.data: built-ins, user files, the dtype contract and every DataError message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from protolab.data import Dataset, dataset_names, load_dataset
from protolab.errors import DataError, UserInputError

BUILTIN_SHAPES = {
    # name: (input_shape, input_dtype, task, n_classes, n_total)
    "digits": ((8, 8, 1), "float32", "classification", 10, 1797),
    "moons": ((2,), "float32", "classification", 2, 2000),
    "sequence": ((16,), "int64", "classification", 4, 4000),
    "sine": ((16, 1), "float32", "regression", None, 2000),
    "spirals": ((2,), "float32", "classification", 3, 1500),
}


def _arrays(ds: Dataset) -> list[np.ndarray]:
    return [ds.x_train, ds.y_train, ds.x_val, ds.y_val]


def _same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(_arrays(a), _arrays(b), strict=True))


def _check_contract(ds: Dataset) -> None:
    for x in (ds.x_train, ds.x_val):
        assert x.dtype in (np.float32, np.int64)
        assert x.flags.c_contiguous
    if ds.task == "classification":
        assert ds.n_classes is not None
        for y in (ds.y_train, ds.y_val):
            assert y.dtype == np.int64 and y.ndim == 1
            assert y.min() >= 0 and y.max() < ds.n_classes
        assert ds.output_shape == (ds.n_classes,)
        assert ds.metric == "val/acc"
    else:
        assert ds.n_classes is None
        assert ds.y_train.dtype == np.float32 and ds.y_val.dtype == np.float32
        assert ds.metric == "val/rmse"
    assert len(ds.x_train) == len(ds.y_train) == ds.n_train
    assert len(ds.x_val) == len(ds.y_val) == ds.n_val


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _error(spec: str, base: Path | None = None, **kw: object) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(spec, base, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- built-ins


def test_dataset_names_sorted() -> None:
    assert dataset_names() == sorted(BUILTIN_SHAPES)


@pytest.mark.parametrize("name", sorted(BUILTIN_SHAPES))
def test_builtin_contract(name: str) -> None:
    shape, dtype, task, n_classes, total = BUILTIN_SHAPES[name]
    ds = load_dataset(name, seed=0)
    _check_contract(ds)
    assert ds.name == name
    assert (ds.input_shape, ds.input_dtype, ds.task, ds.n_classes) == (
        shape,
        dtype,
        task,
        n_classes,
    )
    assert ds.n_train + ds.n_val + ds.n_test == total
    assert ds.n_test == round(total * 0.15)  # held out first (fixed seed): tests/test_data_split
    assert ds.n_val == round((total - ds.n_test) * 0.2)
    if task == "classification":
        assert set(np.unique(ds.y_val)) == set(range(n_classes or 0))  # stratified: all present
    else:
        assert ds.y_train.shape == (ds.n_train,) and ds.output_shape == (1,)
    assert len(ds.fingerprint) == 12


@pytest.mark.parametrize("name", sorted(BUILTIN_SHAPES))
def test_builtin_deterministic_per_seed(name: str) -> None:
    a, b, c = load_dataset(name, seed=3), load_dataset(name, seed=3), load_dataset(name, seed=4)
    assert _same(a, b) and a.fingerprint == b.fingerprint
    assert not _same(a, c) and a.fingerprint != c.fingerprint


def test_digits_scaled_and_stratified() -> None:
    ds = load_dataset("digits", seed=1)
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    val_share = np.bincount(ds.y_val) / np.bincount(np.concatenate([ds.y_train, ds.y_val]))
    assert np.allclose(val_share, 0.2, atol=0.02)


def test_digits_data_fixed_only_split_moves() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    rows = {r.tobytes() for r in np.concatenate([a.x_train, a.x_val])}
    assert rows == {r.tobytes() for r in np.concatenate([b.x_train, b.x_val])}


def test_sequence_label_rule() -> None:
    ds = load_dataset("sequence")
    x, y = ds.x_train, ds.y_train
    assert x.min() >= 0 and x.max() <= 9
    counts = np.stack([(x == t).sum(axis=1) for t in range(4)], axis=1)
    assert np.array_equal(y, counts.argmax(axis=1))
    tie = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert tie.any()  # ties exist and go to the lowest token (argmax picks the first)


def test_sine_target_is_next_value() -> None:
    ds = load_dataset("sine")
    assert ds.x_test is not None and ds.y_test is not None
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    # Windows overlap: the window starting one step later ends with this window's target.
    starts = {row[:-1].tobytes(): j for j, row in enumerate(x)}
    pairs = [
        (i, starts[row[1:].tobytes()]) for i, row in enumerate(x) if row[1:].tobytes() in starts
    ]
    assert len(pairs) == len(x) - 1
    assert all(x[j][-1, 0] == y[i] for i, j in pairs)


def test_val_fraction_respected() -> None:
    ds = load_dataset("moons", val_fraction=0.5)  # of the 1700 left after the 300 test rows
    assert ds.n_val == 850 and ds.n_train == 850


def test_dataset_is_frozen() -> None:
    ds = load_dataset("spirals")
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]


def test_import_does_not_pull_frameworks() -> None:
    code = (
        "import sys, protolab.data;"
        "bad=[m for m in ('torch','tensorflow','keras','mlflow','optuna','sklearn')"
        " if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": src}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------- npz files


def test_npz_single_layout_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5)).astype(np.float64)
    y = np.repeat([0, 1], 50).astype(np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset("d.npz", tmp_path, seed=7)
    _check_contract(ds)
    assert ds.name == "d.npz" and ds.n_classes == 2 and ds.input_dtype == "float32"
    assert (ds.n_train, ds.n_val) == (80, 20)
    assert np.bincount(ds.y_val).tolist() == [10, 10]
    assert _same(ds, load_dataset("d.npz", tmp_path, seed=7))
    assert not _same(ds, load_dataset("d.npz", tmp_path, seed=8))


def test_npz_split_layout_regression(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "r.npz",
        x_train=np.ones((10, 3)),
        y_train=np.arange(20, dtype=np.float64).reshape(10, 2),
        x_val=np.zeros((4, 3)),
        y_val=np.zeros((4, 2)),
        notes=np.array([1]),  # extra keys are ignored
    )
    ds = load_dataset(str(tmp_path / "r.npz"))  # absolute path, no base_dir
    _check_contract(ds)
    assert ds.task == "regression" and ds.output_shape == (2,)
    assert (ds.n_train, ds.n_val) == (10, 4)
    assert np.array_equal(ds.y_train[1], [2.0, 3.0])


def test_npz_labels_remapped_and_tokens(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.int32).reshape(20, 2)
    y = np.array([3, 7] * 10)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    ds = load_dataset("t.npz", tmp_path)
    assert ds.n_classes == 2 and set(ds.y_train) | set(ds.y_val) == {0, 1}
    assert ds.input_dtype == "int64" and ds.x_train.dtype == np.int64


def test_npz_uint8_images_become_float(tmp_path: Path) -> None:
    np.savez(tmp_path / "i.npz", x=np.full((10, 4, 4), 255, np.uint8), y=np.arange(10) % 2)
    ds = load_dataset("i.npz", tmp_path)
    assert ds.input_dtype == "float32" and ds.x_train.max() == 255.0


def test_npz_one_d_x_and_column_y(tmp_path: Path) -> None:
    np.savez(tmp_path / "v.npz", x=np.arange(10.0), y=(np.arange(10) % 2).reshape(10, 1))
    ds = load_dataset("v.npz", tmp_path)
    assert ds.input_shape == (1,) and ds.y_train.ndim == 1


def test_split_layout_labels_encoded_jointly(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "s.npz",
        x_train=np.zeros((4, 2)),
        y_train=np.array([1, 1, 2, 2]),
        x_val=np.zeros((2, 2)),
        y_val=np.array([5, 1]),
    )
    ds = load_dataset("s.npz", tmp_path)
    assert ds.n_classes == 3
    assert ds.y_train.tolist() == [0, 0, 1, 1] and ds.y_val.tolist() == [2, 0]


# ----------------------------------------------------------------------------- csv files


def test_csv_classification(tmp_path: Path) -> None:
    rows = "\n".join(f"{i * 0.5},{-i},{i % 3}" for i in range(30))
    _write_csv(tmp_path / "c.csv", f"a, b ,target\n{rows}\n\n")
    ds = load_dataset("c.csv", tmp_path)
    _check_contract(ds)
    assert ds.task == "classification" and ds.n_classes == 3 and ds.input_shape == (2,)
    assert ds.n_train + ds.n_val == 30


def test_csv_regression_target_any_column(tmp_path: Path) -> None:
    rows = "\n".join(f"{i}.0,{i},{i * 2}" for i in range(10))
    _write_csv(tmp_path / "r.csv", f"target,a,b\n{rows}\n")
    ds = load_dataset("r.csv", tmp_path)
    _check_contract(ds)
    assert ds.task == "regression" and ds.output_shape == (1,)
    both_x = np.concatenate([ds.x_train, ds.x_val])
    both_y = np.concatenate([ds.y_train, ds.y_val])
    assert np.array_equal(both_x[:, 0], both_y)  # features are the other columns, in order


def test_relative_path_resolves_against_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exp" / "data").mkdir(parents=True)
    _write_csv(tmp_path / "exp" / "data" / "c.csv", "x,target\n" + "1,0\n2,1\n" * 5)
    monkeypatch.chdir(tmp_path)  # cwd is elsewhere: base_dir must win
    assert load_dataset("data/c.csv", tmp_path / "exp").name == "data/c.csv"
    assert load_dataset("exp/data/c.csv").n_train == 8  # no base_dir: the cwd


# ----------------------------------------------------------------------------- errors


def test_data_error_is_user_input_error() -> None:
    assert issubclass(DataError, UserInputError) and DataError.exit_code == 2


def test_unknown_builtin() -> None:
    msg = _error("mnist")
    assert "unknown dataset 'mnist'" in msg
    assert all(n in msg for n in dataset_names())
    assert ".npz" in msg and ".csv" in msg


def test_missing_file_shows_absolute_path(tmp_path: Path) -> None:
    msg = _error("nope.npz", tmp_path)
    assert str(tmp_path / "nope.npz") in msg and "does not exist" in msg


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    assert "is a directory" in _error("d.csv", tmp_path)


def test_unsupported_extension(tmp_path: Path) -> None:
    msg = _error("data/train.parquet", tmp_path)
    assert "'.parquet'" in msg and ".npz" in msg and ".csv" in msg


def test_npz_missing_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", np.zeros(3), features=np.zeros(3))
    msg = _error("k.npz", tmp_path)
    assert "k.npz" in msg and "missing keys" in msg
    assert "['arr_0', 'features']" in msg
    assert "['x', 'y']" in msg and "['x_train', 'y_train', 'x_val', 'y_val']" in msg


def test_npz_both_layouts_refused(tmp_path: Path) -> None:
    z = np.zeros((4, 2))
    np.savez(tmp_path / "b.npz", x=z, y=z, x_train=z, y_train=z, x_val=z, y_val=z)
    assert "both key sets" in _error("b.npz", tmp_path)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert "cannot be read as .npz" in _error("bad.npz", tmp_path)


def test_npz_object_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    assert "cannot be read as .npz" in _error("o.npz", tmp_path)


def test_length_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", x=np.zeros((10, 2)), y=np.arange(9) % 2)
    msg = _error("m.npz", tmp_path)
    assert "m.npz" in msg and "x has 10 samples but y has 9" in msg


def test_split_layout_shape_mismatch(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "s.npz",
        x_train=np.zeros((4, 2)),
        y_train=np.zeros(4),
        x_val=np.zeros((2, 3)),
        y_val=np.zeros(2),
    )
    assert "x_train samples are (2,)" in _error("s.npz", tmp_path)


def test_empty_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    msg = _error("e.npz", tmp_path)
    assert "e.npz" in msg and "x is empty" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("a,target\n", "no data rows"),
        ("target\n1\n2\n", "only the 'target' column"),
    ],
)
def test_empty_csv(tmp_path: Path, text: str, expected: str) -> None:
    _write_csv(tmp_path / "e.csv", text)
    msg = _error("e.csv", tmp_path)
    assert "e.csv" in msg and expected in msg


def test_csv_non_numeric_cell(tmp_path: Path) -> None:
    _write_csv(tmp_path / "n.csv", "age,city,target\n1,2,0\n3,paris,1\n")
    msg = _error("n.csv", tmp_path)
    assert "line 3" in msg and "column 'city'" in msg and "'paris'" in msg


def test_csv_empty_cell(tmp_path: Path) -> None:
    _write_csv(tmp_path / "n.csv", "a,target\n1,0\n,1\n")
    assert "line 3, column 'a': an empty cell" in _error("n.csv", tmp_path)


def test_csv_ragged_row(tmp_path: Path) -> None:
    _write_csv(tmp_path / "n.csv", "a,b,target\n1,2,0\n1,1\n")
    assert "line 3 has 2 fields but the header has 3" in _error("n.csv", tmp_path)


def test_csv_without_target(tmp_path: Path) -> None:
    _write_csv(tmp_path / "t.csv", "a,label\n1,0\n")
    msg = _error("t.csv", tmp_path)
    assert "no 'target' column" in msg and "['a', 'label']" in msg


def test_csv_nan_cell(tmp_path: Path) -> None:
    _write_csv(tmp_path / "n.csv", "a,target\n1,0\nnan,1\n")
    assert "line 3, column 'a': 'nan' is NaN or inf" in _error("n.csv", tmp_path)


def test_nan_or_inf_in_x(tmp_path: Path) -> None:
    x = np.zeros((10, 2))
    x[4, 1] = np.inf
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(10) % 2)
    msg = _error("f.npz", tmp_path)
    assert "f.npz" in msg and "NaN or inf" in msg and "(4, 1)" in msg


def test_too_few_samples(tmp_path: Path) -> None:
    _write_csv(tmp_path / "s.csv", "a,target\n1,0\n2,1\n")
    msg = _error("s.csv", tmp_path)
    assert "2 samples are too few" in msg and "need at least 3" in msg


def test_bad_val_fraction() -> None:
    assert "allowed: 0 < val_fraction < 1" in _error("moons", val_fraction=1.0)


def test_bad_seed() -> None:
    assert "seed is -1" in _error("moons", seed=-1)


def test_negative_label(tmp_path: Path) -> None:
    _write_csv(tmp_path / "n.csv", "a,target\n" + "1,-1\n2,1\n" * 3)
    msg = _error("n.csv", tmp_path)
    assert "n.csv" in msg and "negative label -1" in msg


def test_single_class(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", x=np.zeros((10, 2)), y=np.full(10, 3))
    assert "single class (3)" in _error("o.npz", tmp_path)


def test_integer_regression_target_flagged(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{1000 + i}" for i in range(50))
    _write_csv(tmp_path / "p.csv", f"a,target\n{rows}\n")
    assert "looks like regression" in _error("p.csv", tmp_path)


def test_one_hot_classification_target(tmp_path: Path) -> None:
    np.savez(tmp_path / "h.npz", x=np.zeros((10, 2)), y=np.eye(2, dtype=np.int64)[[0, 1] * 5])
    ds = load_dataset("h.npz", tmp_path)  # one-hot rows: class indices (tests/test_data_split)
    assert ds.task == "classification" and ds.n_classes == 2


def test_string_target(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((4, 2)), y=np.array(["a", "b", "a", "b"]))
    assert "y has dtype <U1" in _error("s.npz", tmp_path)


def test_csv_label_overflow(tmp_path: Path) -> None:
    _write_csv(tmp_path / "o.csv", "a,target\n1,0\n2,99999999999999999999\n")
    assert "beyond the int64 range" in _error("o.csv", tmp_path)
