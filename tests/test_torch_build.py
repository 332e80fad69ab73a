"""The PyTorch builder on its own: shapes, parameter counts, padding, training, pickling."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from protolab import layers as L
from protolab.arch import Arch, same_padding
from protolab.arch._catalogue import CATALOGUE, Example
from protolab.backends.torch.nn import build_torch, count_params
from protolab.errors import ArchError


def sample(example: Example, batch: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    shape = (batch, *example.input_shape)
    if example.input_dtype in ("float32", "float64"):
        return torch.randn(shape, dtype=getattr(torch, example.input_dtype))
    return torch.randint(0, 20, shape, dtype=getattr(torch, example.input_dtype))


@pytest.mark.parametrize("example", CATALOGUE, ids=lambda e: e.name)
def test_build_matches_inference_and_trains(example: Example) -> None:
    info = example.arch.infer(example.input_shape, example.input_dtype)
    model = build_torch(example.arch, example.input_shape, example.input_dtype)
    assert count_params(model) == info.params

    x = sample(example)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    y = model(x)
    assert tuple(y.shape) == (4, *info.output_shape)
    loss = y.float().pow(2).mean() + y.float().mean()
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, trainable, strict=True))

    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_default_input_dtype_follows_the_first_layer() -> None:
    tokens = build_torch(Arch(L.Embedding(10, 4), L.GRU(3)), (6,))
    assert tuple(tokens(torch.randint(0, 10, (2, 6))).shape) == (2, 3)
    assert tuple(tokens(torch.randint(0, 10, (2, 6), dtype=torch.uint8)).shape) == (2, 3)
    pixels = build_torch(Arch(L.Flatten(), L.Dense(2)), (4, 4, 1))
    assert tuple(pixels(torch.rand(2, 4, 4, 1)).shape) == (2, 2)
    # the dtype is not declared, yet integer pixels are cast as in the Keras model
    assert tuple(pixels(torch.ones(2, 4, 4, 1, dtype=torch.uint8)).shape) == (2, 2)


def test_impossible_arch_raises_before_building() -> None:
    with pytest.raises(ArchError, match=r"layer 1 Conv2D\(filters=8, kernel_size=3\)"):
        build_torch(Arch(L.Flatten(), L.Conv2D(8, 3)), (8, 8, 1))


@pytest.mark.parametrize(("n", "k", "s"), [(7, 3, 2), (8, 3, 2), (8, 4, 2), (5, 1, 3), (9, 5, 1)])
def test_same_padding_matches_tensorflow_rule(n: int, k: int, s: int) -> None:
    left, right = same_padding(n, k, s)
    assert left + right == max((-(-n // s) - 1) * s + k - n, 0)
    assert right - left in (0, 1)  # the odd pixel goes right, as in TensorFlow
    model = build_torch(Arch(L.Conv1D(1, k, strides=s, padding="same")), (n, 1))
    assert tuple(model(torch.zeros(1, n, 1)).shape) == (1, -(-n // s), 1)


def test_strided_same_conv_pads_the_odd_pixel_right() -> None:
    model = build_torch(Arch(L.Conv1D(1, 2, strides=2, padding="same")), (5, 1))
    conv: Any = model[0].conv
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 10.0]]]))
        conv.bias.zero_()
    x = torch.arange(1.0, 6.0).reshape(1, 5, 1)
    # TF pads (0, 1): windows [1,2], [3,4], [5,0]
    assert model(x).flatten().tolist() == [21.0, 43.0, 5.0]


def test_flatten_is_channels_last() -> None:
    model = build_torch(Arch(L.Flatten()), (2, 2, 3))
    x = torch.arange(12.0).reshape(1, 2, 2, 3)
    assert model(x).flatten().tolist() == list(range(12))


def test_batchnorm_normalises_the_last_axis_of_any_rank() -> None:
    model = build_torch(Arch(L.BatchNorm()), (5, 3))
    x = torch.randn(4, 5, 3) * 3 + 2
    y = model.train()(x)
    assert torch.allclose(y.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)
    bn = model[0]
    assert (bn.eps, bn.momentum) == (1e-3, pytest.approx(0.01))  # Keras' 1e-3 and 0.99


def test_batchnorm_takes_keras_arguments() -> None:
    x = torch.randn(6, 4, 3) * 3 + 2
    # axis=1 (Keras counts the batch axis): the 4 positions are normalised, per position
    model = build_torch(Arch(L.BatchNorm(axis=1, momentum=0.9, epsilon=1e-5)), (4, 3))
    y = model.train()(x)
    assert torch.allclose(y.mean(dim=(0, 2)), torch.zeros(4), atol=1e-5)
    bn = model[0]
    assert (bn.eps, bn.momentum, tuple(bn.running_mean.shape)) == (1e-5, pytest.approx(0.1), (4,))
    # center / scale apart: only the kept one is a parameter (torch's affine is both or none)
    for center, scale in ((False, True), (True, False), (False, False)):
        layer = L.BatchNorm(center=center, scale=scale)
        net = build_torch(Arch(layer), (4, 3))
        names = {name.split(".")[-1] for name, _ in net.named_parameters()}
        assert names == {n for n, kept in (("bias", center), ("weight", scale)) if kept}
        assert sum(p.numel() for p in net.parameters()) == Arch(layer).param_count((4, 3))
        assert torch.isfinite(net.train()(x)).all()


def test_keras_initialisation_family() -> None:
    model = build_torch(Arch(L.Dense(8), L.LSTM(4), L.Dense(2)), (3, 5))
    dense: Any = model[0].linear
    assert torch.count_nonzero(dense.bias) == 0
    assert dense.weight.abs().max() <= (6 / (5 + 8)) ** 0.5
    rnn: Any = model[1].rnn
    assert torch.equal(rnn.bias_ih_l0[4:8], torch.ones(4))  # forget-gate bias 1
    assert not rnn.bias_hh_l0.requires_grad and torch.count_nonzero(rnn.bias_hh_l0) == 0
    w = rnn.weight_hh_l0  # (4u, u) with orthonormal columns, as Keras' (u, 4u) orthogonal
    assert torch.allclose(w.T @ w, torch.eye(4), atol=1e-5)


def test_activation_registry_matches_keras_definitions() -> None:
    x = torch.linspace(-3, 3, 13).reshape(1, 13)
    for name, expected in [
        ("gelu", F.gelu(x, approximate="none")),
        ("leaky_relu", F.leaky_relu(x, 0.2)),
        ("silu", x * torch.sigmoid(x)),
        ("linear", x),
    ]:
        model = build_torch(Arch(L.Activation(name)), (13,))
        assert torch.allclose(model(x), expected), name


def test_model_pickles() -> None:
    example = next(e for e in CATALOGUE if e.name == "tokens_transformer")
    model = build_torch(example.arch, (12,), "int32")
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randint(0, 20, (2, 12), dtype=torch.int32)
    model.eval()
    clone.eval()
    assert torch.equal(model(x), clone(x))
