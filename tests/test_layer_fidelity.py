"""Layer fidelity with Keras 3: names, defaults, init and outputs; native models; the registry.

Real frameworks on both sides. "Same model" is checked as: parameter counts equal to each
other and to ``Arch.infer``, outputs equal after copying the Keras weights into the torch
model, and weights drawn from the same distributions (Keras' initializer names).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import protolab as pl
from protolab import layers as L
from protolab.arch import Arch, build_custom
from protolab.backends.tensorflow import nn as kb
from protolab.backends.torch import nn as tb
from protolab.errors import ArchError
from tests.test_keras_build import _perturb, copy_keras_to_torch

keras = kb.keras


def _same_function(arch: Arch, shape: tuple[int, ...], dtype: str = "float32") -> None:
    """Equal counts (== Arch.infer) and equal outputs once the weights are the same."""
    keras.utils.set_random_seed(0)
    info = arch.infer(shape, dtype)
    kmodel = kb.build(arch, shape, dtype)
    tmodel = tb.build_torch(arch, shape, dtype)
    assert kb.count_params(kmodel) == tb.count_params(tmodel) == info.params
    _perturb(kmodel)
    copy_keras_to_torch(arch, kmodel, tmodel)
    rng = np.random.default_rng(1)
    if dtype.startswith("int"):
        x = rng.integers(0, 10, (3, *shape)).astype(dtype)
    else:
        x = rng.standard_normal((3, *shape)).astype(dtype)
    expected = kmodel(x, training=False).numpy()
    with torch.no_grad():
        got = tmodel.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (3, *info.output_shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the registry


def test_every_layer_type_reaches_a_builder_on_both_frameworks() -> None:
    from protolab.backends._keras_nn import BUILDERS as KERAS

    assert tb.BUILDERS.missing() == [] and KERAS.missing() == []
    # one path for built-ins and custom layers: the builders dispatch on nothing else
    src = (
        Path(tb.__file__).read_text()
        + Path(kb.__file__).parent.joinpath("..").joinpath("_keras_nn.py").read_text()
    )
    assert "match layer" not in src and "case Dense" not in src


def test_unregistered_layer_type_is_named() -> None:
    from dataclasses import dataclass

    from protolab.arch._base import Shape, Traced

    @dataclass(frozen=True, repr=False)
    class Unbuilt(L.Layer):
        def trace(self, shape: Shape, dtype: str) -> Traced:
            return Traced(shape)

    with pytest.raises(ArchError, match=r"Unbuilt\(\): no torch builder is registered"):
        tb.build_torch(Arch(Unbuilt()), (3,))


# ---------------------------------------------------------------- Keras names and defaults


def test_conv_defaults_are_keras_defaults() -> None:
    conv = L.Conv2D(8, 3)
    assert (conv.padding, conv.use_bias, conv.kernel_initializer) == (
        "valid",
        True,
        "glorot_uniform",
    )
    assert Arch(conv).infer((7, 7, 2)).output_shape == (5, 5, 8)
    assert tuple(kb.build(Arch(conv), (7, 7, 2)).output.shape[1:]) == (5, 5, 8)
    assert keras.layers.Conv2D(8, 3).padding == "valid"


def test_a_keras_example_counts_the_same() -> None:
    # keras.io "Simple MNIST convnet", its summary's total: 34,826
    convnet = Arch(
        L.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        L.MaxPool(pool_size=(2, 2)),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        L.MaxPool(pool_size=(2, 2)),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    )
    assert convnet.param_count((28, 28, 1)) == 34_826


def test_the_keras_transformer_example_counts_the_same() -> None:
    """The keras.io "Text classification with Transformer" model, written in plain Keras,
    against its protolab spelling (small sizes, same structure)."""
    vocab, maxlen, dim, heads, ff = 50, 10, 8, 2, 16

    class TokenAndPositionEmbedding(keras.layers.Layer):  # the example's, verbatim
        def __init__(self, maxlen: int, vocab_size: int, embed_dim: int) -> None:
            super().__init__()
            self.token_emb = keras.layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = keras.layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x: Any) -> Any:
            positions = self.pos_emb(keras.ops.arange(start=0, stop=keras.ops.shape(x)[-1]))
            return self.token_emb(x) + positions

    inputs = keras.Input((maxlen,), dtype="int32")
    x = TokenAndPositionEmbedding(maxlen, vocab, dim)(inputs)
    att = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=dim)(x, x)
    out1 = keras.layers.LayerNormalization(epsilon=1e-6)(x + keras.layers.Dropout(0.1)(att))
    ffn = keras.layers.Dense(dim)(keras.layers.Dense(ff, activation="relu")(out1))
    x = keras.layers.LayerNormalization(epsilon=1e-6)(out1 + ffn)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(20, "relu")(x))
    reference = keras.Model(inputs, outputs).count_params()
    arch = Arch(
        L.PositionalEmbedding(vocab, dim, maxlen=maxlen),
        L.TransformerBlock(dim, heads, ff),
        L.GlobalAveragePooling1D(),
        L.Dropout(0.1),
        L.Dense(20, activation="relu"),
        L.Dense(2, activation="softmax"),
    )
    assert arch.param_count((maxlen,), "int32") == reference
    assert arch.output_activation == "softmax"


@pytest.mark.parametrize(
    ("arch", "shape", "dtype"),
    [
        (Arch(L.Dense(5, use_bias=False, activation="softmax")), (4,), "float32"),
        (Arch(L.Conv1D(3, 3, use_bias=False), L.Activation("log_softmax")), (6, 2), "float32"),
        (Arch(L.DepthwiseConv2D((3, 2), strides=2, depth_multiplier=3)), (7, 6, 2), "float32"),
        (Arch(L.Conv2DTranspose(3, 3, strides=2, padding="same")), (3, 4, 2), "float32"),
        (Arch(L.Conv2DTranspose(2, (2, 3), strides=(3, 1), use_bias=False)), (3, 3, 2), "float32"),
        (Arch(L.Conv2DTranspose(2, 4, strides=2, padding="same")), (3, 3, 1), "float32"),
        (Arch(L.UpSampling2D((3, 2)), L.GlobalAveragePooling2D()), (2, 3, 2), "float32"),
        (Arch(L.MultiHeadAttention(2, 3, value_dim=5, use_bias=False)), (6, 4), "float32"),
        (Arch(L.MultiHeadAttention(1, 4, use_causal_mask=True)), (5, 3), "float32"),
        (Arch(L.PositionalEmbedding(10, 4), L.TransformerBlock(4, 2, 8, key_dim=3)), (6,), "int32"),
        (Arch(L.Conv2D(3, 3, padding="same"), L.BatchNorm()), (5, 4, 2), "float32"),
        (Arch(L.Dense(4), L.BatchNorm(center=False, momentum=0.9)), (3,), "float32"),
        (Arch(L.Conv1D(3, 2), L.BatchNorm(axis=1, scale=False, epsilon=1e-5)), (6, 2), "float32"),
        (
            Arch(L.Conv2D(2, 1), L.BatchNorm(axis=-3, center=False, scale=False)),
            (3, 4, 2),
            "float32",
        ),
    ],
    ids=lambda v: repr(v)[:60] if isinstance(v, Arch) else None,
)
def test_new_layers_match_keras(arch: Arch, shape: tuple[int, ...], dtype: str) -> None:
    _same_function(arch, shape, dtype)


def test_new_layers_round_trip_through_json_and_count_flops() -> None:
    arch = Arch(
        L.Conv2DTranspose(4, 3, strides=2, padding="same", kernel_initializer="he_uniform"),
        L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False),
        L.UpSampling2D(2),
        L.GlobalAveragePooling2D(),
        L.Dense(3, activation="softmax", bias_initializer="ones"),
    )
    assert (
        Arch.from_json(arch.to_json()) == arch and Arch.from_json(arch.to_json()).hash == arch.hash
    )
    rows = arch.infer((4, 4, 2)).rows
    assert rows[0].flops == 2 * 16 * 9 * 2 * 4  # every input position scatters a 3x3 kernel
    assert rows[1].flops == 2 * 36 * 9 * 8 and rows[1].params == 9 * 8
    text = Arch(L.PositionalEmbedding(9, 4, maxlen=7), L.TransformerBlock(4, 1, 6)).to_json()
    tokens = Arch.from_json(text)
    info = tokens.infer((5,), "int64")
    assert info.rows[0].params == 9 * 4 + 7 * 4
    mha = L.MultiHeadAttention(2, 3, value_dim=5)
    length, dim, qk, v = 5, 4, 6, 10
    assert Arch(mha).flops_per_sample((length, dim)) == 2 * length * (
        dim * (2 * qk + v) + v * dim
    ) + 2 * length * length * (qk + v)
    block = info.rows[1]
    assert block.flops == sum(r.flops for r in block.children) > 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.Dense(3, kernel_initializer="orthogonal"), "`kernel_initializer` must be one"),
        (lambda: L.Conv2D(3, 3, use_bias=1), "Conv2D: `use_bias` must be a bool"),
        (lambda: L.MultiHeadAttention(0, 4), "`num_heads >= 1` must hold, but got num_heads=0"),
        (lambda: L.UpSampling2D(interpolation="bilinear"), "must be one of nearest"),
        (lambda: L.TransformerBlock(8, 2, 16, epsilon=0), "TransformerBlock: `epsilon > 0`"),
        (lambda: L.Activation("softmax2"), "unknown activation 'softmax2'"),
        (lambda: L.BatchNorm(momentum=1.5), "BatchNorm: `0 <= momentum <= 1` must hold"),
        (lambda: L.BatchNorm(epsilon=0), "BatchNorm: `epsilon > 0` must hold, but got epsilon=0"),
        (lambda: L.BatchNorm(epsilon=float("nan")), "`epsilon` must be a finite number"),
        (lambda: L.BatchNorm(center="yes"), "BatchNorm: `center` must be a bool"),
        (lambda: L.BatchNorm(scale=None), "BatchNorm: `scale` must be a bool"),
        (lambda: L.BatchNorm(axis=0), "`axis` 0 is the batch axis"),
        (lambda: L.BatchNorm(axis=1.5), "BatchNorm: `axis` must be an int, but got axis=1.5"),
    ],
)
def test_bad_arguments_state_the_rule(make: Any, message: str) -> None:
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


# ---------------------------------------------------------------- BatchNorm: Keras' own


def test_batchnorm_takes_keras_names_and_defaults() -> None:
    ours, theirs = L.BatchNorm(), keras.layers.BatchNormalization()
    for name in ("axis", "momentum", "epsilon", "center", "scale"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert repr(ours) == "BatchNorm()"
    with pytest.raises(
        ArchError, match=r"layer 0 BatchNorm\(axis=2\): needs a sample of rank >= 2"
    ):
        Arch(L.BatchNorm(axis=2)).infer((5,))


def test_batchnorm_with_keras_defaults_computes_the_same_on_both() -> None:
    """Eval mode, given weights: Keras' epsilon (1e-3) reaches torch, where it matters (a
    small moving variance), and the parameter count is the same on both."""
    arch = Arch(L.Dense(6), L.BatchNorm())
    kmodel, tmodel = kb.build(arch, (4,)), tb.build_torch(arch, (4,))
    assert kb.count_params(kmodel) == tb.count_params(tmodel) == arch.param_count((4,)) == 42
    _perturb(kmodel)
    bn = kmodel.get_layer("l1_batchnorm")
    variance = np.full(6, 2e-3, dtype="float32")
    bn.moving_variance.assign(variance)
    copy_keras_to_torch(arch, kmodel, tmodel)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype("float32")
    expected = kmodel(x, training=False).numpy()
    with torch.no_grad():
        got = tmodel.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    gamma, beta, mean = (keras.ops.convert_to_numpy(w) for w in bn.weights[:3])
    dense = kmodel.get_layer("l0_dense")
    h = x @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(dense.bias)
    np.testing.assert_allclose(
        expected, gamma * (h - mean) / np.sqrt(variance + 1e-3) + beta, rtol=1e-4, atol=1e-5
    )


def test_batchnorm_json_states_its_constants_and_reads_old_ones() -> None:
    arch = Arch(L.Dense(3), L.BatchNorm(center=False))
    data = arch.to_dict()["layers"][1]
    assert data == {"type": "BatchNorm", "center": False, "momentum": 0.99, "epsilon": 0.001}
    assert Arch.from_json(arch.to_json()) == arch
    # an arch.json written when BatchNorm's constants were torch's (not stored: defaults)
    old = Arch.from_dict({"layers": [{"type": "Dense", "units": 3}, {"type": "BatchNorm"}]})
    assert old.layers[1] == L.BatchNorm(momentum=0.9, epsilon=1e-5)
    assert old.hash != Arch(L.Dense(3), L.BatchNorm()).hash


def test_shape_errors_of_new_layers_name_the_layer() -> None:
    with pytest.raises(ArchError, match=r"layer 0 TransformerBlock.*embed_dim=8\) input"):
        Arch(L.TransformerBlock(8, 2, 16)).infer((5, 6))
    with pytest.raises(ArchError, match="needs at most maxlen=4 positions"):
        Arch(L.PositionalEmbedding(10, 4, maxlen=4)).infer((6,), "int32")


# ---------------------------------------------------------------- initializers


@pytest.mark.parametrize("name", ["glorot_uniform", "he_normal", "lecun_uniform", "random_normal"])
def test_initializers_draw_from_the_keras_distribution(name: str) -> None:
    arch = Arch(L.Dense(300, kernel_initializer=name), L.MultiHeadAttention(3, 40))
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    kmodel, tmodel = kb.build(arch, (6, 200)), tb.build_torch(arch, (6, 200))
    pairs = [  # (torch tensor, keras weight) for the Dense kernel and the q / output kernels
        (tmodel[0].linear.weight, kmodel.layers[1].kernel),
        (tmodel[1].query.weight, kmodel.layers[2].query_dense.kernel),
        (tmodel[1].output.weight, kmodel.layers[2].output_dense.kernel),
    ]
    for t, k in pairs:
        tw, kw = t.detach().numpy(), keras.ops.convert_to_numpy(k)
        assert tw.std() == pytest.approx(kw.std(), rel=0.05), (name, t.shape)
        assert np.abs(tw).max() <= np.abs(kw).max() * 1.1 + 1e-6


def test_constant_initializers_and_no_bias() -> None:
    model = tb.build_torch(
        Arch(L.Conv2D(3, 2, kernel_initializer="ones", bias_initializer="ones")), (3, 3, 1)
    )
    conv: Any = model[0].conv
    assert torch.all(conv.weight == 1) and torch.all(conv.bias == 1)
    bare = tb.build_torch(Arch(L.MultiHeadAttention(2, 2, use_bias=False)), (3, 4))
    assert all(p.ndim == 2 for p in bare.parameters())  # kernels only


# ---------------------------------------------------------------- softmax outputs


def test_output_activation_says_when_outputs_are_probabilities() -> None:
    assert Arch(L.Dense(4), L.Dense(3, activation="softmax")).output_activation == "softmax"
    assert Arch(L.Dense(3), L.Activation("softmax"), L.Activation("linear")).output_activation == (
        "softmax"
    )
    assert Arch(L.Dense(3)).output_activation is None
    assert Arch(L.Dense(3, "log_softmax")).output_activation is None  # log-probs are logits
    assert Arch(L.Dense(3, "softmax"), L.Dropout(0.5)).output_activation is None
    assert Arch(L.Residual(L.Dense(3, "softmax"))).output_activation is None


def test_softmax_outputs_sum_to_one_on_both() -> None:
    arch = Arch(L.Dense(5, activation="softmax"))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    with torch.no_grad():
        t = tb.build_torch(arch, (3,))(torch.from_numpy(x)).numpy()
    k = kb.build(arch, (3,))(x).numpy()
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(k.sum(-1), 1.0, rtol=1e-5)


def test_causal_mask_hides_later_positions_on_both() -> None:
    arch = Arch(L.MultiHeadAttention(2, 3, use_causal_mask=True))
    x = np.random.default_rng(0).standard_normal((1, 5, 4)).astype("float32")
    y = x.copy()
    y[:, 3:] += 5.0  # change only the last positions
    tmodel, kmodel = tb.build_torch(arch, (5, 4)), kb.build(arch, (5, 4))
    with torch.no_grad():
        ta, tb_ = (tmodel(torch.from_numpy(v)).numpy() for v in (x, y))
    ka, kb_ = kmodel(x).numpy(), kmodel(y).numpy()
    for a, b in ((ta, tb_), (ka, kb_)):
        np.testing.assert_allclose(a[:, :3], b[:, :3], rtol=1e-5, atol=1e-6)
        assert not np.allclose(a[:, 3:], b[:, 3:])


# ---------------------------------------------------------------- native models


class _TorchMLP(torch.nn.Module):
    def __init__(self, width: int, extra: int = 0) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, width + extra), torch.nn.ReLU()
        )
        self.head = torch.nn.Linear(width + extra, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _keras_mlp(width: int) -> Any:
    return keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(width, "relu"), keras.layers.Dense(10)]
    )


def _pair(width: int) -> Arch:
    return pl.native(torch=lambda: _TorchMLP(width), keras=lambda: _keras_mlp(width), name="mlp")


def test_a_native_pair_builds_on_both_with_the_same_count() -> None:
    arch = _pair(16)
    info = arch.infer((8, 8, 1))
    assert (info.output_shape, info.params) == ((10,), 64 * 16 + 16 + 16 * 10 + 10)
    tmodel, kmodel = tb.build_torch(arch, (8, 8, 1)), kb.build(arch, (8, 8, 1))
    assert tb.count_params(tmodel) == kb.count_params(kmodel) == info.params
    assert tuple(tmodel(torch.zeros(2, 8, 8, 1)).shape) == (2, 10)
    data = arch.to_dict()["layers"][0]
    assert data["type"] == "Native" and data["name"] == "mlp" and data["config"] == {"width": 16}
    assert data["frameworks"] == ["torch", "keras"]
    assert _pair(16).hash == arch.hash != _pair(17).hash  # the sampled value is in the hash
    with pytest.raises(ArchError, match="cannot be rebuilt from JSON"):
        Arch.from_json(arch.to_json())


def test_a_native_builder_may_take_the_input_shape() -> None:
    arch = pl.native(torch=lambda shape: torch.nn.Linear(shape[-1], 3), flops=2 * 5 * 3)
    info = arch.infer((4, 5))
    assert (info.output_shape, info.params, info.flops_per_sample) == ((4, 3), 18, 30)
    tokens = pl.native(torch=lambda: torch.nn.Embedding(12, 3))  # integer ids stay integers
    out = tb.build_torch(tokens, (6,), "int64")(torch.randint(0, 12, (2, 6)))
    assert tuple(out.shape) == (2, 6, 3)


def test_a_one_sided_native_model_builds_on_its_side_only() -> None:
    arch = pl.native(torch=lambda: _TorchMLP(8))
    assert tb.count_params(tb.build_torch(arch, (8, 8, 1))) == arch.param_count((8, 8, 1))
    with pytest.raises(ArchError, match=r"Native\(name='native'.*has no keras builder"):
        kb.build(arch, (8, 8, 1))


def test_mismatched_native_counts_name_both() -> None:
    arch = pl.native(torch=lambda: _TorchMLP(16, extra=1), keras=lambda: _keras_mlp(16))
    keras_count, torch_count = 64 * 16 + 16 + 170, 64 * 17 + 17 + 180
    with pytest.raises(ArchError) as e:  # whichever side counted first, the other fails
        tb.build_torch(arch, (8, 8, 1))
        kb.build(arch, (8, 8, 1))
    text = str(e.value)
    assert str(torch_count) in text and str(keras_count) in text
    assert "both builders must make the same model" in text


def test_native_builder_mistakes_are_named() -> None:
    def broken() -> Any:
        raise ValueError("no such width")

    with pytest.raises(ArchError) as e:
        pl.native(torch=broken).infer((3,))
    assert re.search(r"the torch builder .*broken \(test_layer_fidelity.py:\d+\) raised", str(e))
    assert "raised ValueError: no such width" in str(e.value)
    with pytest.raises(ArchError) as e:
        pl.native(keras=lambda: 3).infer((3,))
    assert re.search(r"the keras builder .*<lambda> \(test_layer_fidelity.py:\d+\)", str(e))
    assert "must return a keras.layers.Layer (or keras.Model), but returned int: 3" in str(e.value)
    with pytest.raises(ArchError, match="needs a torch= and/or a keras= builder"):
        pl.native()
    with pytest.raises(ArchError, match="torch= must be a function"):
        pl.native(torch=torch.nn.Linear(3, 3).weight)


# ---------------------------------------------------------------- a new model per call


@pl.layer
class SharedHead(pl.CustomLayer):
    """A custom layer whose torch builder hands out one module made outside it."""

    def torch(self, input_shape: Any) -> Any:
        return _SHARED


_SHARED = torch.nn.Linear(4, 2)


class _ComparesByValue:
    """Unhashable (it compares by value): what was handed out is tracked all the same."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ComparesByValue)

    __hash__ = None  # type: ignore[assignment]


@pl.layer
class ByValue(pl.CustomLayer):
    def torch(self, input_shape: Any) -> Any:
        return _BY_VALUE


_BY_VALUE = _ComparesByValue()


def test_a_builder_that_hands_back_an_object_again_is_refused_naming_it() -> None:
    made_once = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # at import
    arch = pl.native(torch=lambda: made_once)
    with pytest.raises(ArchError) as e:  # the probe built it, the build gets it again
        tb.build_torch(arch, (8, 8, 1))
    text = str(e.value)
    assert re.search(
        r"pl.native: the torch builder .*<lambda> \(test_layer_fidelity.py:\d+\) returned the "
        r"same Sequential object as an earlier call",
        text,
    )
    assert "one trial's trained weights into the next" in text
    assert "construct the module inside the builder" in text
    with pytest.raises(ArchError, match="returned the same Sequential object"):
        arch.check_builders((8, 8, 1))  # a sweep's dry run: two calls, before any trial
    with pytest.raises(ArchError, match=r"SharedHead: the torch builder SharedHead.torch \(test"):
        tb.build_torch(Arch(SharedHead()), (4,))
    with pytest.raises(ArchError, match=r"SharedHead: the torch builder SharedHead\.torch"):
        Arch(L.Dense(4), SharedHead()).check_builders((3,))  # after built-in layers too
    assert build_custom(ByValue(), "torch", (4,)) is _BY_VALUE  # the first time: handed out
    with pytest.raises(ArchError, match="returned the same _ComparesByValue object"):
        build_custom(ByValue(), "torch", (4,))
    dense = keras.layers.Dense(3)
    with pytest.raises(ArchError, match=r"the keras builder .*<lambda> .* same Dense object"):
        kb.build(pl.native(keras=lambda: dense), (4,))


def test_a_builder_making_a_new_model_per_call_builds_as_often_as_asked() -> None:
    arch = _pair(8)
    arch.check_builders((8, 8, 1))
    for _ in range(2):  # a trial's probe, then each backend's build, then the next trial
        tb.build_torch(arch, (8, 8, 1))
        kb.build(arch, (8, 8, 1))


# ---------------------------------------------------------------- a native model's outputs


class _FunctionalSoftmax(torch.nn.Module):
    """Softmax applied in forward (``F.softmax``): no Softmax module to look for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softmax(self.fc(x), dim=-1)


_TAILS: dict[str, Any] = {
    "": list,
    "softmax": lambda: [torch.nn.Softmax(-1)],
    "log_softmax": lambda: [torch.nn.LogSoftmax(-1)],
    "sigmoid": lambda: [torch.nn.Sigmoid()],
}


def _torch_head(tail: str = "", units: int = 3) -> Any:
    """A builder of Linear(4, units) then ``tail``: every module new per call."""
    return lambda: torch.nn.Sequential(torch.nn.Linear(4, units), *_TAILS[tail]())


@pytest.mark.parametrize(
    ("torch_builder", "keras_builder", "expected"),
    [
        (_torch_head("softmax"), None, "softmax"),
        (_FunctionalSoftmax, None, "softmax"),
        (_torch_head(), None, None),
        (_torch_head("log_softmax"), None, None),  # log-probabilities are logits
        (_torch_head("sigmoid", units=2), None, None),  # rows need not sum to 1
        (None, lambda: keras.layers.Dense(3, activation="softmax"), "softmax"),
        (
            None,
            lambda: keras.Sequential([keras.layers.Dense(3), keras.layers.Softmax()]),
            "softmax",
        ),
        (None, lambda: keras.layers.Dense(3), None),
    ],
)
def test_a_native_models_output_rows_say_whether_they_are_probabilities(
    torch_builder: Any, keras_builder: Any, expected: str | None
) -> None:
    arch = pl.native(torch=torch_builder, keras=keras_builder)
    if torch_builder is not None:
        tb.build_torch(arch, (4,))
    else:
        kb.build(arch, (4,))
    assert arch.output_activation == expected
    # a sequence's rows: one per position; after built-in layers: the head's own input
    behind = Arch(L.Dense(4), arch)
    behind.outputs_on("torch" if torch_builder else "keras", (5, 6))
    assert behind.output_activation == expected


def test_builders_that_disagree_on_probabilities_are_refused() -> None:
    arch = pl.native(
        torch=lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)),
        keras=lambda: keras.layers.Dense(3),
    )
    with pytest.raises(ArchError) as e:  # whichever side was probed first, the other fails
        tb.build_torch(arch, (4,))
        kb.build(arch, (4,))
    text = str(e.value)
    assert re.search(
        r"the torch builder .*<lambda> \(test_layer_fidelity.py:\d+\) outputs prob", text
    )
    assert re.search(
        r"the keras builder .*<lambda> \(test_layer_fidelity.py:\d+\) outputs logits", text
    )
    assert "both builders must make the same model" in text


def _moons_net(softmax: bool) -> Arch:
    def net() -> torch.nn.Module:
        head = [torch.nn.Softmax(dim=-1)] if softmax else []
        layers = [torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2), *head]
        return torch.nn.Sequential(*layers)

    def keras_net() -> Any:
        return keras.Sequential(
            [keras.layers.Dense(32, "relu"), keras.layers.Dense(2, "softmax" if softmax else None)]
        )

    return pl.native(torch=net, keras=keras_net, name=f"moons_{softmax}")


def _train_moons(mode: str, arch: Arch) -> Any:
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.data import load_dataset

    settings = TrainSettings(epochs=15, batch_size=64, optimizer="adam", lr=1e-2, seed=0)
    backend = get_backend(mode)
    try:
        return backend.run(Job(arch, load_dataset("moons"), settings, Hardware(accelerator="cpu")))
    finally:
        backend.release()


#: the lowest cross-entropy a 2-class softmax head can reach when softmaxed twice: -log(sigmoid(1))
DOUBLE_SOFTMAX_FLOOR = 0.3133


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lightning", "tf-graph"])
def test_a_native_softmax_head_trains_as_its_logits_twin(mode: str) -> None:
    """The same model with and without its softmax: one loss on every mode, so the same
    accuracy, and a train loss below what a double softmax allows (issue 22)."""
    probs, logits = (_train_moons(mode, _moons_net(softmax)) for softmax in (True, False))
    assert probs.tags["output"] == "probabilities" and logits.tags["output"] == "logits"
    assert probs.history[-1]["train/loss"] < DOUBLE_SOFTMAX_FLOOR - 0.1
    assert probs.metrics["val/acc"] == pytest.approx(logits.metrics["val/acc"], abs=0.02)
    assert probs.metrics["val/acc"] > 0.85


NATIVE = """
import keras
import torch

import protolab as pl


@pl.experiment(data="digits", metric="val/acc")
def model(space):
    width = space.int("width", 16, 32)
    torch_net = lambda: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
    )
    keras_net = lambda: keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(width, "relu"), keras.layers.Dense(10)]
    )
    return pl.native(torch=torch_net, keras=keras_net if KERAS else None)
"""


def test_a_one_sided_native_model_is_refused_at_config_time(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from protolab.cli import app

    (tmp_path / "exp.py").write_text(textwrap.dedent(NATIVE).replace("KERAS", "False"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("experiment: exp.py\nbackends: [lightning, keras]\nstudy: {n_trials: 1}\n")
    out = CliRunner().invoke(app, ["sweep", str(cfg)], catch_exceptions=False)
    assert out.exit_code == 2, out.output
    assert "backends: keras builds with keras" in out.output and "Native(" in out.output
    assert "Traceback" not in out.output
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lightning", "jax"])
def test_a_native_pair_trains_on_both_families(tmp_path: Path, mode: str) -> None:
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.data import load_dataset
    from protolab.script import load_experiment
    from protolab.space import Space

    path = tmp_path / "native_exp.py"
    path.write_text(textwrap.dedent(NATIVE).replace("KERAS", "True"))
    arch = load_experiment(path).build(Space(values={"width": 24}))
    settings = TrainSettings(epochs=2, batch_size=64, optimizer="adam", lr=3e-3, seed=0)
    backend = get_backend(mode)  # jax runs in a worker: the lambdas travel pickled by value
    try:
        job = Job(arch, load_dataset("digits"), settings, Hardware(accelerator="cpu"))
        result = backend.run(job)
    finally:
        backend.release()
    assert result.metrics["model/params"] == 64 * 24 + 24 + 24 * 10 + 10
    assert result.metrics["val/acc"] > 0.5


# ---------------------------------------------------------------- torch_default

_TD = {"bias_initializer": "torch_default"}


def _np(w: Any) -> Any:
    return w.detach().numpy() if isinstance(w, torch.Tensor) else keras.ops.convert_to_numpy(w)


def _torch_default_weights() -> list[tuple[str, int, list[Any]]]:
    """(layer, torch's fan_in, [weights: torch build, Keras build, torch's own default layer])
    for the kernel and the bias of a Dense, a Conv2D, a DepthwiseConv2D, a Conv1D and a
    Conv2DTranspose, all ``torch_default``."""
    cases: list[tuple[Any, tuple[int, ...], Any, int]] = [
        (
            L.Dense(300, kernel_initializer="torch_default", **_TD),
            (200,),
            torch.nn.Linear(200, 300),
            200,
        ),
        (
            L.Conv2D(256, 3, kernel_initializer="torch_default", **_TD),
            (6, 6, 3),
            torch.nn.Conv2d(3, 256, 3),
            27,
        ),
        (
            L.DepthwiseConv2D(3, depthwise_initializer="torch_default", **_TD),
            (5, 5, 256),
            torch.nn.Conv2d(256, 256, 3, groups=256),
            9,
        ),
        (
            L.Conv1D(256, 5, kernel_initializer="torch_default", **_TD),
            (12, 8),
            torch.nn.Conv1d(8, 256, 5),
            40,
        ),
        (
            L.Conv2DTranspose(256, 3, kernel_initializer="torch_default", **_TD),
            (4, 4, 16),
            torch.nn.ConvTranspose2d(16, 256, 3),  # torch's fan_in: weight dim 1, out channels
            256 * 9,
        ),
    ]
    out = []
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    for layer, shape, own, fan_in in cases:
        arch = Arch(layer)
        kl = kb.build(arch, shape).get_layer(f"l0_{type(layer).__name__.lower()}")
        tm: Any = tb.build_torch(arch, shape)[0]
        tl = getattr(tm, "linear", None) or getattr(tm, "conv", None) or tm
        what = type(layer).__name__
        out.append((f"{what} kernel", fan_in, [tl.weight, kl.kernel, own.weight]))
        out.append((f"{what} bias", fan_in, [tl.bias, kl.bias, own.bias]))
    return out


def test_torch_default_draws_torchs_default_on_both_frameworks() -> None:
    """U(±1/sqrt(fan_in)) for kernels and biases (a bias: its kernel's fan_in), the bound
    ``nn.Linear`` / ``nn.Conv*`` use, on the torch and the Keras build alike."""
    for what, fan_in, weights in _torch_default_weights():
        bound = 1.0 / np.sqrt(fan_in)
        for side, w in zip(("torch", "keras", "torch's own layer"), map(_np, weights), strict=True):
            top = np.abs(w).max()
            assert bound * 0.95 <= top <= bound * (1 + 1e-6), (what, side, top, bound)
            rel = 0.05 if w.size > 2000 else 0.25  # a bias: a few hundred draws
            assert w.var() == pytest.approx(bound**2 / 3, rel=rel), (what, side, w.var())


def test_unknown_and_unavailable_initializers_are_refused_clearly() -> None:
    with pytest.raises(
        ArchError, match=r"Dense: `kernel_initializer` must be one of .*torch_default"
    ):
        L.Dense(3, kernel_initializer="torch")
    with pytest.raises(ArchError, match=r"Conv2D: `bias_initializer` must be one of .*got bias_"):
        L.Conv2D(3, 3, bias_initializer="kaiming_uniform")
    with pytest.raises(
        ArchError, match=r"MultiHeadAttention: `kernel_initializer`='torch_default'"
    ):
        L.MultiHeadAttention(2, 4, kernel_initializer="torch_default")


def test_the_lightning_mlp_port_starts_as_nn_linear() -> None:
    path = Path(__file__).resolve().parents[1] / "experiments" / "port_lightning_mlp.py"
    arch = load_experiment_arch(path)
    dense = [layer for layer in arch.layers if isinstance(layer, L.Dense)]
    assert len(dense) == 3  # two hidden layers at the defaults, and the head
    for layer in dense:
        assert layer.kernel_initializer == layer.bias_initializer == "torch_default"


def load_experiment_arch(path: Path) -> Arch:
    from protolab.script import load_experiment
    from protolab.space import Space

    return load_experiment(path).build(Space())
