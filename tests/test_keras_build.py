"""The Keras builder, and that both builders make the same model.

"Same" is checked three ways: equal trainable parameter counts and output shapes (both equal
to ``Arch.infer``), and equal outputs after copying the Keras weights into the torch model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from protolab import layers as L
from protolab.arch import Arch, Composite
from protolab.arch._catalogue import CATALOGUE, Example
from protolab.backends.tensorflow import nn as kb
from protolab.backends.torch import nn as tb
from protolab.errors import ArchError

keras = kb.keras
tf = pytest.importorskip("tensorflow")


def sample(example: Example, batch: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (batch, *example.input_shape)
    if example.input_dtype.startswith(("int", "uint")):
        return rng.integers(0, 20, shape).astype(example.input_dtype)
    return rng.standard_normal(shape).astype(example.input_dtype)


@pytest.mark.parametrize("example", CATALOGUE, ids=lambda e: e.name)
def test_build_matches_inference_and_trains(example: Example) -> None:
    keras.utils.set_random_seed(0)
    info = example.arch.infer(example.input_shape, example.input_dtype)
    model = kb.build(example.arch, example.input_shape, example.input_dtype)
    assert kb.count_params(model) == info.params
    assert tuple(model.output.shape[1:]) == info.output_shape

    x = sample(example)
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_mean(tf.square(y)) + tf.reduce_mean(y)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
    before = [w.numpy().copy() for w in model.trainable_weights]
    optimizer.apply(grads, model.trainable_weights)
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(before, model.trainable_weights, strict=True)
    )
    assert np.isfinite(model(x, training=False).numpy()).all()


@pytest.mark.parametrize("example", CATALOGUE, ids=lambda e: e.name)
def test_torch_and_keras_compute_the_same_function(example: Example) -> None:
    keras.utils.set_random_seed(1)
    kmodel = kb.build(example.arch, example.input_shape, example.input_dtype)
    tmodel = tb.build_torch(example.arch, example.input_shape, example.input_dtype)
    assert tb.count_params(tmodel) == kb.count_params(kmodel)
    _perturb(kmodel)
    copy_keras_to_torch(example.arch, kmodel, tmodel)

    x = sample(example, seed=2)
    expected = kmodel(x, training=False).numpy()
    with torch.no_grad():
        got = tmodel.eval()(torch.from_numpy(x)).numpy()
    assert (
        got.shape
        == expected.shape
        == (4, *example.arch.infer(example.input_shape, example.input_dtype).output_shape)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_strided_same_conv_on_odd_input_matches() -> None:
    arch = Arch(L.Conv2D(5, 3, strides=2, padding="same"))
    _assert_same_outputs(arch, (7, 7, 3))


def test_dense_after_flattened_conv_matches() -> None:
    arch = Arch(
        L.Conv2D(4, 3, strides=2, padding="same", activation="relu"), L.Flatten(), L.Dense(6)
    )
    _assert_same_outputs(arch, (7, 7, 2))


def test_batchnorm_training_mode_matches() -> None:
    arch = Arch(
        L.Conv2D(3, 3, padding="same"), L.BatchNorm(), L.Flatten(), L.Dense(2), L.BatchNorm()
    )
    _assert_same_outputs(arch, (5, 5, 2), training=True)


def test_xla_compiles_and_trains() -> None:
    # One small model: XLA compiles take seconds on CPU; training jobs exercise the rest.
    arch = Arch(
        L.Embedding(20, 8),
        L.Residual(L.LayerNorm(), L.SelfAttention(2, 4)),
        L.Residual(L.Conv1D(8, 3, strides=2, padding="same", activation="gelu"), L.BatchNorm()),
        L.GlobalAvgPool(),
        L.Dense(2),
    )
    model = kb.build(arch, (12,), "int32")
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    x = np.random.default_rng(0).integers(0, 20, (8, 12)).astype("int32")
    assert np.isfinite(model.train_on_batch(x, np.zeros((8, 2), dtype="float32")))


def test_impossible_arch_raises_before_building() -> None:
    with pytest.raises(ArchError, match=r"layer 0 GRU\(units=3\): needs a \(length, features\)"):
        kb.build(Arch(L.GRU(3)), (8, 8, 1))


def test_integer_inputs() -> None:
    tokens = kb.build(Arch(L.Embedding(10, 4), L.GRU(3)), (6,))
    assert tokens.inputs[0].dtype == "int64"
    pixels = kb.build(Arch(L.Flatten(), L.Dense(2)), (4, 4, 1), "uint8")
    assert pixels.inputs[0].dtype == "uint8"
    assert pixels(np.ones((2, 4, 4, 1), dtype="uint8")).shape == (2, 2)


# ---------------------------------------------------------------- weight copying


def _assert_same_outputs(arch: Arch, shape: tuple[int, ...], training: bool = False) -> None:
    keras.utils.set_random_seed(3)
    kmodel = kb.build(arch, shape, "float32")
    tmodel = tb.build_torch(arch, shape, "float32")
    _perturb(kmodel)
    copy_keras_to_torch(arch, kmodel, tmodel)
    x = np.random.default_rng(4).standard_normal((4, *shape)).astype("float32")
    expected = kmodel(x, training=training).numpy()
    with torch.no_grad():
        got = tmodel.train(training)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _perturb(model: Any) -> None:
    """Random biases and running statistics too, so that every weight's mapping matters."""
    rng = np.random.default_rng(5)
    for w in model.weights:
        if w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign(0.3 * rng.standard_normal(w.shape).astype("float32"))


def copy_keras_to_torch(arch: Arch, kmodel: Any, tmodel: torch.nn.Module) -> None:
    with torch.no_grad():
        _copy_sequence(arch.layers, kmodel, list(tmodel.children()), "l")


def _copy_sequence(
    layers: tuple[L.Layer, ...], kmodel: Any, modules: list[Any], prefix: str
) -> None:
    for i, (layer, module) in enumerate(zip(layers, modules, strict=True)):
        path = f"{prefix}{i}"
        name = f"{path}_{type(layer).__name__.lower()}"
        if isinstance(layer, L.Residual):
            _copy_sequence(layer.layers, kmodel, list(module.body), f"{path}_")
            if module.proj is not None:
                kernel = kmodel.get_layer(f"{path}_projection").get_weights()[0]
                _set(module.proj.weight, kernel.reshape(-1, kernel.shape[-1]).T)
        elif isinstance(layer, Composite):  # expands to the same layers on both sides
            _copy_sequence(layer.expand(()), kmodel, list(module), f"{path}_")
        elif isinstance(layer, L.PositionalEmbedding):
            _set(module.token.weight, kmodel.get_layer(name).get_weights()[0])
            _set(module.position.weight, kmodel.get_layer(f"{name}_position").get_weights()[0])
        else:
            _copy_layer(layer, module, kmodel.get_layer(name).get_weights())


def _copy_layer(layer: L.Layer, module: Any, w: list[np.ndarray]) -> None:
    match layer:
        case L.Dense():
            _set(module.linear.weight, w[0].T)
            _set_bias(module.linear.bias, w)
        case L.DepthwiseConv2D():  # keras (kh, kw, cin, m) -> torch (cin * m, 1, kh, kw)
            kh, kw, cin, m = w[0].shape
            kernel = np.transpose(w[0], (2, 3, 0, 1)).reshape(cin * m, 1, kh, kw)
            _set(module.conv.weight, kernel)
            _set_bias(module.conv.bias, w)
        case L.Conv2DTranspose():  # keras (kh, kw, out, in) -> torch (in, out, kh, kw)
            _set(module.weight, np.transpose(w[0], (3, 2, 0, 1)))
            _set_bias(module.bias, w)
        case L.Conv1D() | L.Conv2D():
            rank = w[0].ndim - 2  # keras (*kernel, cin, f) -> torch (f, cin, *kernel)
            _set(module.conv.weight, np.transpose(w[0], (rank + 1, rank, *range(rank))))
            _set_bias(module.conv.bias, w)
        case L.BatchNorm():  # keras: [gamma if scale] [beta if center] moving mean, variance
            names = ["weight"] * layer.scale + ["bias"] * layer.center
            for name, value in zip((*names, "running_mean", "running_var"), w, strict=True):
                _set(getattr(module, name), value)
        case L.LayerNorm():
            _set(module.weight, w[0])
            _set(module.bias, w[1])
        case L.Embedding():
            _set(module.weight, w[0])
        case L.LSTM():  # same gate order (i, f, c/g, o); keras' single bias goes to bias_ih
            rnn = module.rnn
            _set(rnn.weight_ih_l0, w[0].T)
            _set(rnn.weight_hh_l0, w[1].T)
            _set(rnn.bias_ih_l0, w[2])
            _set(rnn.bias_hh_l0, np.zeros_like(w[2]))
        case L.GRU():  # keras gates (z, r, h) -> torch (r, z, n)
            u = layer.units
            order = np.r_[u : 2 * u, 0:u, 2 * u : 3 * u]
            rnn = module.rnn
            _set(rnn.weight_ih_l0, w[0][:, order].T)
            _set(rnn.weight_hh_l0, w[1][:, order].T)
            _set(rnn.bias_ih_l0, w[2][0, order])
            _set(rnn.bias_hh_l0, w[2][1, order])
        case L.SelfAttention() | L.MultiHeadAttention():
            _copy_attention(module, w)
        case _:
            assert not w, f"weights of {layer!r} were not copied"


def _copy_attention(module: Any, w: list[np.ndarray]) -> None:
    """Keras' (kernel[, bias]) per projection q, k, v, output; kernels are einsum-shaped."""
    step = 2 if len(w) == 8 else 1
    lins = (module.query, module.key, module.value, module.output)
    for i, lin in enumerate(lins):
        kernel = w[step * i]
        flat = kernel.reshape(-1, kernel.shape[-1]) if i == 3 else kernel.reshape(len(kernel), -1)
        _set(lin.weight, flat.T)
        if step == 2:
            _set(lin.bias, w[2 * i + 1].reshape(-1))


def _set_bias(param: torch.Tensor | None, w: list[np.ndarray]) -> None:
    assert (param is None) == (len(w) == 1), "bias present on one side only"
    if param is not None:
        _set(param, w[1])


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    assert tuple(param.shape) == value.shape, (tuple(param.shape), value.shape)
    param.copy_(torch.from_numpy(np.ascontiguousarray(value)))
