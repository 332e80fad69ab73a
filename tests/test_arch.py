"""The framework-neutral architecture: values, serialisation, hashing and inference."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from protolab import layers as L
from protolab.arch import Arch, ArchInfo
from protolab.arch._catalogue import CATALOGUE, Example
from protolab.errors import ArchError

SRC = Path(__file__).resolve().parents[1] / "src"

NESTED = Arch(
    L.Conv2D(4, 3, padding="same", activation="relu"),
    L.Residual(
        L.Conv2D(8, (3, 3), strides=2, padding="same"),
        L.BatchNorm(),
        L.Residual(L.Conv2D(8, 1), L.Activation("gelu")),
    ),
    L.GlobalAvgPool(),
    L.Dropout(0.25),
    L.Dense(10),
)


# ---------------------------------------------------------------- values


def test_positional_construction_and_repr() -> None:
    assert L.Dense(64, "relu") == L.Dense(units=64, activation="relu")
    assert repr(L.Dense(64, activation="relu")) == "Dense(units=64, activation='relu')"
    assert repr(L.Conv2D(16, 3)) == "Conv2D(filters=16, kernel_size=3)"
    block = L.Residual(L.Dense(32), L.Activation("relu"))
    assert block.layers == (L.Dense(32), L.Activation("relu"))
    assert repr(block) == "Residual(Dense(units=32), Activation(name='relu'))"
    assert repr(Arch(L.Flatten(), L.Dense(10))) == "Arch(Flatten(), Dense(units=10))"


def test_equal_meanings_are_equal_values() -> None:
    assert L.Conv2D(8, (3, 3), strides=(2, 2)) == L.Conv2D(8, 3, strides=2)
    assert L.Conv1D(8, (3,)) == L.Conv1D(8, 3)
    assert L.Dense(4, "linear") == L.Dense(4)
    assert L.Dense(4, "swish") == L.Dense(4, "silu")
    assert L.Conv2D(8, (3, 1)).kernel_size == (3, 1)
    assert Arch(L.Dense(4), [L.Dense(5), L.Dense(6)]) == Arch(L.Dense(4), L.Dense(5), L.Dense(6))
    assert Arch(Arch(L.Dense(4)), L.Dense(5)) == Arch(L.Dense(4), L.Dense(5))


def test_values_are_immutable_and_hashable() -> None:
    layer = L.Dense(4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.units = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        NESTED.layers = ()  # type: ignore[misc]
    assert isinstance(NESTED.layers, tuple)
    assert len({NESTED, Arch.from_json(NESTED.to_json()), Arch(L.Dense(1))}) == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.Dense(0), "Dense: `units >= 1` must hold, but got units=0"),
        (lambda: L.Dense(64, "relux"), "Dense: unknown activation 'relux'; allowed: elu, gelu,"),
        (
            lambda: L.Dense(64.0),  # type: ignore[arg-type]
            "Dense: `units` must be an int, but got units=64.0 (float)",
        ),
        (lambda: L.Dense(True), "Dense: `units` must be an int"),
        (lambda: L.Conv2D(8, 0), "Conv2D: `kernel_size >= 1` must hold, but got kernel_size=0"),
        (lambda: L.Conv2D(8, (3, 3, 3)), "Conv2D: `kernel_size` must be an int or a tuple of 2"),
        (lambda: L.Conv1D(8, (3, 3)), "Conv1D: `kernel_size` must be an int or a tuple of 1"),
        (lambda: L.Conv2D(8, 3, padding="full"), "Conv2D: `padding` must be one of same, valid"),
        (lambda: L.Dropout(1.0), "Dropout: `0 <= rate < 1` must hold, but got rate=1.0"),
        (lambda: L.Dropout(-0.1), "Dropout: `0 <= rate < 1` must hold"),
        (lambda: L.Activation(None), "Activation: unknown activation None"),  # type: ignore[arg-type]
        (lambda: L.MaxPool(0), "MaxPool: `pool_size >= 1` must hold"),
        (lambda: L.Embedding(0, 4), "Embedding: `vocab_size >= 1` must hold"),
        (lambda: L.LSTM(8, return_sequences=1), "LSTM: `return_sequences` must be a bool"),  # type: ignore[arg-type]
        (lambda: L.SelfAttention(0, 4), "SelfAttention: `heads >= 1` must hold"),
        (lambda: L.Residual(), "Residual: needs at least one layer"),
        (lambda: Arch(), "Arch: needs at least one layer"),
        (
            lambda: Arch(L.Dense(3), "relu"),  # type: ignore[arg-type]
            "Arch: every argument must be a layer, but got 'relu'",
        ),
    ],
)
def test_constructor_validation(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ArchError) as info:
        make()
    assert message in str(info.value)


# ---------------------------------------------------------------- serialisation and hash


def test_json_round_trip_nested_residual() -> None:
    text = NESTED.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    back = Arch.from_json(text)
    assert back == NESTED
    assert back.hash == NESTED.hash
    assert isinstance(back.layers[1], L.Residual)
    assert isinstance(back.layers[1].layers[2], L.Residual)
    assert Arch.from_dict(json.loads(NESTED.to_json(indent=2))) == NESTED


@pytest.mark.parametrize("example", CATALOGUE, ids=lambda e: e.name)
def test_json_round_trip_catalogue(example: Example) -> None:
    assert Arch.from_json(example.arch.to_json()) == example.arch


def test_defaults_are_left_out_of_the_json() -> None:
    assert Arch(L.Conv2D(8, 3)).to_dict() == {
        "format": 1,
        "layers": [{"type": "Conv2D", "filters": 8, "kernel_size": 3}],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "architecture JSON is malformed"),
        ('{"layers": 3}', "must be an object with a 'layers' list"),
        ('{"layers": [{"type": "Dense2"}]}', "unknown layer type 'Dense2'"),
        ('{"layers": [{"type": "Dense", "unit": 3}]}', "Dense: unknown field 'unit'"),
        ('{"layers": [{"type": "Dense"}]}', "Dense: "),
        ('{"layers": [{"type": "Dense", "units": 0}]}', "`units >= 1` must hold"),
        ('{"format": 9, "layers": []}', "unsupported architecture format 9"),
    ],
)
def test_from_json_rejects_bad_documents(text: str, message: str) -> None:
    with pytest.raises(ArchError) as info:
        Arch.from_json(text)
    assert message in str(info.value)


def test_hash_tracks_values() -> None:
    assert len(NESTED.hash) == 12
    assert int(NESTED.hash, 16) >= 0
    same = Arch.from_json(NESTED.to_json())
    assert same.hash == NESTED.hash
    changed = Arch(*NESTED.layers[:-1], L.Dense(11))
    assert changed.hash != NESTED.hash
    assert Arch(L.Dropout(0.25)).hash != Arch(L.Dropout(0.26)).hash
    assert Arch(L.LSTM(4)).hash != Arch(L.LSTM(4, return_sequences=True)).hash
    assert Arch(L.MaxPool()).hash != Arch(L.AvgPool()).hash


def test_hash_is_stable_across_processes() -> None:
    code = (
        "from protolab.arch import Arch; import sys; print(Arch.from_json(sys.stdin.read()).hash)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=NESTED.to_json(),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == NESTED.hash


def test_arch_package_imports_no_framework() -> None:
    code = (
        "import sys, protolab; before = set(sys.modules); "
        "import protolab.arch, protolab.layers; "
        "heavy = {m.split('.')[0] for m in set(sys.modules) - before} "
        "& {'torch', 'tensorflow', 'keras', 'numpy', 'lightning'}; print(sorted(heavy))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- inference


def test_infer_counts_params_and_flops() -> None:
    info = Arch(L.Flatten(), L.Dense(16, "relu"), L.Dense(3)).infer((8, 8, 1))
    assert isinstance(info, ArchInfo)
    assert info.input_shape == (8, 8, 1)
    assert info.output_shape == (3,)
    assert info.params == (64 * 16 + 16) + (16 * 3 + 3)
    assert info.flops_per_sample == 2 * (64 * 16 + 16 * 3)
    assert [r.index for r in info.rows] == [0, 1, 2]
    assert [r.output_shape for r in info.rows] == [(64,), (16,), (3,)]


@pytest.mark.parametrize(
    ("layer", "shape", "out", "params"),
    [
        (L.Conv2D(8, 3, padding="same"), (7, 7, 2), (7, 7, 8), 3 * 3 * 2 * 8 + 8),
        (L.Conv2D(8, 3), (7, 7, 2), (5, 5, 8), 3 * 3 * 2 * 8 + 8),  # Keras' default: valid
        (L.Conv2D(8, 3, strides=2, padding="same"), (7, 7, 2), (4, 4, 8), 152),
        (L.Conv2D(8, (3, 2), strides=(2, 1), padding="valid"), (7, 7, 2), (3, 6, 8), 104),
        (L.Conv1D(4, 5, strides=3, padding="same"), (10, 3), (4, 4), 5 * 3 * 4 + 4),
        (L.MaxPool(), (7, 5, 3), (3, 2, 3), 0),
        (L.AvgPool(3), (10, 3), (3, 3), 0),
        (L.GlobalAvgPool(), (5, 5, 3), (3,), 0),
        (L.BatchNorm(), (4, 4, 6), (4, 4, 6), 12),
        (L.BatchNorm(center=False), (4, 4, 6), (4, 4, 6), 6),  # gamma only
        (L.BatchNorm(axis=1, scale=False), (5, 4, 6), (5, 4, 6), 5),  # Keras' axis 1: rows
        (L.BatchNorm(axis=-2, center=False, scale=False), (5, 4, 6), (5, 4, 6), 0),
        (L.LayerNorm(), (12, 6), (12, 6), 12),
        (L.Dense(5), (12, 6), (12, 5), 35),
        (L.LSTM(5), (12, 4), (5,), 4 * (4 * 5 + 5 * 5 + 5)),
        (L.GRU(5, return_sequences=True), (12, 4), (12, 5), 3 * (4 * 5 + 5 * 5 + 2 * 5)),
        (L.SelfAttention(2, 3), (12, 4), (12, 4), 3 * (4 * 6 + 6) + 6 * 4 + 4),
        (L.Residual(L.Dense(6)), (4,), (6,), 4 * 6 + 6 + 4 * 6),
        (L.Residual(L.Conv2D(8, 3, strides=2, padding="same")), (7, 7, 2), (4, 4, 8), 168),
        (L.Residual(L.Conv2D(2, 3, padding="same")), (7, 7, 2), (7, 7, 2), 3 * 3 * 2 * 2 + 2),
    ],
)
def test_layer_shapes_and_params(
    layer: L.Layer, shape: tuple[int, ...], out: tuple[int, ...], params: int
) -> None:
    info = Arch(layer).infer(shape)
    assert (info.output_shape, info.params) == (out, params)


def test_flops_follow_the_matmul_rule() -> None:
    same = L.Conv2D(8, 3, strides=2, padding="same")
    assert Arch(same).flops_per_sample((7, 7, 2)) == 2 * 16 * 9 * 2 * 8
    assert Arch(L.LSTM(5)).flops_per_sample((12, 4)) == 2 * 12 * 4 * (4 * 5 + 5 * 5)
    attention = 2 * 12 * (3 * 4 * 6 + 6 * 4) + 4 * 12 * 12 * 6
    assert Arch(L.SelfAttention(2, 3)).flops_per_sample((12, 4)) == attention
    assert Arch(L.BatchNorm(), L.Activation("relu")).flops_per_sample((9,)) == 0
    assert Arch(L.Embedding(100, 8)).param_count((12,), "int32") == 800


@pytest.mark.parametrize(
    ("arch", "shape", "dtype", "message"),
    [
        (
            Arch(L.Flatten(), L.Dense(8), L.Conv2D(filters=8, kernel_size=3)),
            (8, 8),
            "float32",
            "layer 2 Conv2D(filters=8, kernel_size=3): needs a (height, width, channels) "
            "input, but got shape (8,)",
        ),
        (
            Arch(L.Conv2D(4, 5)),
            (3, 8, 1),
            "float32",
            "layer 0 Conv2D(filters=4, kernel_size=5): needs at least",
        ),
        (Arch(L.LSTM(4)), (12,), "float32", "layer 0 LSTM(units=4): needs a (length, features)"),
        (
            Arch(L.Dense(4), L.Residual(L.Dense(4), L.Conv1D(4, 3))),
            (6,),
            "float32",
            "layer 1.1 Conv1D(filters=4, kernel_size=3): needs a (length, channels) input",
        ),
        (
            Arch(L.Residual(L.Flatten())),
            (4, 4, 2),
            "float32",
            "layer 0 Residual(Flatten()): cannot add the block input (4, 4, 2) to its output",
        ),
        (
            Arch(L.Residual(L.Conv2D(4, 3, padding="valid"))),
            (6, 6, 2),
            "float32",
            "cannot add the block input (6, 6, 2) to its output (4, 4, 4)",
        ),
        (Arch(L.Embedding(10, 4)), (12,), "float32", "needs integer token ids"),
        (Arch(L.Dense(3), L.Embedding(10, 4)), (12,), "int32", "layer 1 Embedding"),
        (Arch(L.MaxPool(4)), (3, 3), "float32", "layer 0 MaxPool(pool_size=4): needs at least"),
        (Arch(L.Dense(3)), (0, 3), "float32", "input shape must be a tuple of positive ints"),
        (Arch(L.Dense(3)), (3,), "complex64", "unknown input dtype 'complex64'"),
    ],
)
def test_shape_errors_name_the_layer(
    arch: Arch, shape: tuple[int, ...], dtype: str, message: str
) -> None:
    with pytest.raises(ArchError) as info:
        arch.infer(shape, dtype)
    assert message in str(info.value)


def test_integer_input_is_cast_unless_embedding_comes_first() -> None:
    assert Arch(L.Flatten(), L.Dense(3)).infer((8, 8, 1), "uint8").output_shape == (3,)
    assert Arch(L.Embedding(10, 4), L.LSTM(3)).infer((12,), "int64").output_shape == (3,)


def test_summary_is_a_table_with_totals() -> None:
    text = NESTED.summary((9, 9, 1))
    lines = text.splitlines()
    assert lines[0].split() == ["#", "layer", "output", "shape", "params"]
    assert any(line.startswith("1.0") and "Conv2D(filters=8" in line for line in lines)
    assert any(line.startswith("1.2.0") for line in lines)
    assert any("projection: 1x1 conv, strides=2" in line for line in lines)
    info = NESTED.infer((9, 9, 1))
    assert f"trainable params: {info.params:,}" in text
    assert f"forward FLOPs per sample: {info.flops_per_sample:,}" in text


@pytest.mark.parametrize("example", CATALOGUE, ids=lambda e: e.name)
def test_catalogue_infers(example: Example) -> None:
    info = example.arch.infer(example.input_shape, example.input_dtype)
    assert info.params == sum(r.params for r in info.rows) > 0
