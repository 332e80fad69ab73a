"""Build an :class:`~protolab.arch.Arch` as a ``torch.nn.Module`` that computes what the Keras
build computes.

Modules take and return channels-last tensors ``(batch, ..., channels)``: convolutions and
pools move the channel axis internally, so a ``Flatten`` orders features as Keras does and
weights can be copied across. Initialisation mirrors Keras' (the layer's initializer names,
fans computed from the Keras kernel shape; orthogonal recurrent kernels, LSTM forget bias 1;
``torch_default``: torch's own ``nn.Linear``/``nn.Conv*`` rule, built the same in Keras)
so that a comparison between the backends measures the frameworks, not starting points.

Every layer type reaches its builder through :data:`BUILDERS` (``@BUILDERS.register(Cls)``
beside each builder): built-ins and custom layers alike, with no dispatch anywhere else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protolab._frameworks import TORCH
from protolab.arch import (
    GRU,
    LEAKY_RELU_SLOPE,
    LSTM,
    Activation,
    Arch,
    AvgPool,
    BatchNorm,
    Builders,
    Composite,
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    CustomLayer,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    MaxPool,
    MultiHeadAttention,
    PositionalEmbedding,
    Residual,
    SelfAttention,
    UpSampling2D,
    build_custom,
    counted_by,
    same_padding,
)
from protolab.arch._arch import default_dtype, effective_dtype
from protolab.arch._base import Shape, as_tuple
from protolab.errors import ArchError

__all__ = ["BUILDERS", "TorchNet", "build_torch", "count_params", "init_"]

#: (layer, one sample's input shape, its dtype) -> the module computing that layer
TorchBuilder = Callable[[Any, Shape, str], nn.Module]
BUILDERS: Builders[TorchBuilder] = Builders("torch")


def _identity(x: Tensor) -> Tensor:
    return x


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "elu": F.elu,
    "gelu": F.gelu,  # exact erf form, as Keras' default
    "leaky_relu": partial(F.leaky_relu, negative_slope=LEAKY_RELU_SLOPE),
    "linear": _identity,  # module-level, so the module pickles (spawned workers)
    "log_softmax": partial(F.log_softmax, dim=-1),  # Keras' axis=-1
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "softmax": partial(F.softmax, dim=-1),
    "softplus": F.softplus,
    "tanh": torch.tanh,
}


def build_torch(arch: Arch, input_shape: Sequence[int], input_dtype: str | None = None) -> TorchNet:
    """Build ``arch`` for per-sample ``input_shape``; raises ArchError for impossible archs.

    ``input_dtype`` (default: int64 when the first layer is an Embedding, else float32) only
    feeds the shape check: the module casts integer inputs itself (see :class:`TorchNet`).
    """
    if input_dtype is None:
        input_dtype = default_dtype(arch.layers)
    info = arch.infer(input_shape, input_dtype)  # the readable error, before building anything
    dtype = effective_dtype(arch.layers, input_dtype)
    net = TorchNet(build_sequence(arch.layers, info.input_shape, dtype), arch.layers[0])
    arch.outputs_on(TORCH, info.input_shape, input_dtype)  # custom code's head, on torch
    return net


def count_params(module: nn.Module) -> int:
    """Trainable parameters: the convention ``Arch.infer`` and the Keras build share."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_sequence(layers: tuple[Layer, ...], shape: Shape, dtype: str) -> nn.Sequential:
    """One module per layer, each looked up in :data:`BUILDERS` by the layer's class."""
    out = nn.Sequential()
    for layer in layers:
        out.append(BUILDERS.lookup(layer)(layer, shape, dtype))
        shape, dtype = layer.trace(shape, dtype).shape, "float32"
    return out


# ---------------------------------------------------------------- Keras initializers


def _fans(keras_shape: Shape) -> tuple[int, int]:
    """Keras' ``compute_fans`` for a kernel of ``keras_shape`` (Keras' layout)."""
    if not keras_shape:
        return 1, 1
    if len(keras_shape) == 1:
        return keras_shape[0], keras_shape[0]
    field = math.prod(keras_shape[:-2])
    return keras_shape[-2] * field, keras_shape[-1] * field


def init_(
    weight: Tensor,
    name: str,
    keras_shape: Shape,
    fans: tuple[int, int] | None = None,
    torch_fan_in: int | None = None,
) -> None:
    """Fill ``weight`` (any layout: entries are i.i.d.) as Keras' ``name`` initializer fills
    a weight of ``keras_shape``; ``fans`` overrides Keras' default fan rule where a Keras
    layer passes its own (EinsumDense kernels in attention).

    ``torch_default`` is PyTorch's ``nn.Linear``/``nn.Conv*`` default, U(±1/sqrt(fan_in)):
    ``torch_fan_in`` is torch's fan_in of the layer's *kernel* (a bias passes its kernel's,
    as torch's ``reset_parameters`` does); without it, the Keras fan_in of ``keras_shape``.
    """
    fan_in, fan_out = fans or _fans(keras_shape)
    with torch.no_grad():
        if name == "torch_default":
            bound = 1.0 / math.sqrt(max(1, torch_fan_in or fan_in))
            weight.uniform_(-bound, bound)
        elif name in ("zeros", "ones"):
            weight.fill_(0.0 if name == "zeros" else 1.0)
        elif name == "random_normal":
            weight.normal_(0.0, 0.05)
        elif name == "random_uniform":
            weight.uniform_(-0.05, 0.05)
        else:
            family, distribution = name.split("_")
            scale = {"glorot": 1.0, "he": 2.0, "lecun": 1.0}[family]
            n = (fan_in + fan_out) / 2.0 if family == "glorot" else float(fan_in)
            scale /= max(1.0, n)
            if distribution == "uniform":
                limit = math.sqrt(3.0 * scale)
                weight.uniform_(-limit, limit)
            else:  # Keras' truncated normal: std corrected for the cut at 2 std
                std = math.sqrt(scale) / 0.87962566103423978
                nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def _glorot(weight: Tensor, fan_in: int, fan_out: int) -> None:
    init_(weight, "glorot_uniform", (), (fan_in, fan_out))


def _linear(
    fan_in: int,
    fan_out: int,
    bias: bool = True,
    kernel: str = "glorot_uniform",
    bias_init: str = "zeros",
) -> nn.Linear:
    """A Keras ``Dense`` kernel (fan_in, fan_out) and bias, initialised as Keras would
    (``torch_default``: as ``nn.Linear`` would, the bias from the kernel's fan_in)."""
    lin = nn.Linear(fan_in, fan_out, bias=bias)
    init_(lin.weight, kernel, (fan_in, fan_out), torch_fan_in=fan_in)
    if lin.bias is not None:
        init_(lin.bias, bias_init, (fan_out,), torch_fan_in=fan_in)
    return lin


class TorchNet(nn.Sequential):
    """The built model: a Sequential (index it like the Arch) that first casts its input the
    way the Keras model does: integer ids for a leading Embedding, the data as stored for
    another layer that takes integers (a native model), float32 for anything else (e.g.
    uint8 pixels)."""

    def __init__(self, layers: nn.Sequential, first: Layer) -> None:
        super().__init__(*layers)
        self.tokens = isinstance(first, Embedding)
        self.as_stored = first.integer_input and not self.tokens

    def forward(self, x: Tensor) -> Tensor:
        if self.tokens and x.dtype not in (torch.int32, torch.int64):
            x = x.long()
        elif not (self.tokens or self.as_stored) and not x.is_floating_point():
            x = x.float()
        return super().forward(x)


# ---------------------------------------------------------------- registered builders


@BUILDERS.register(Dense)
def _dense(layer: Dense, shape: Shape, dtype: str) -> nn.Module:
    return _Dense(shape[-1], layer)


@BUILDERS.register(Conv1D, Conv2D, DepthwiseConv2D)
def _conv(layer: Conv1D | Conv2D | DepthwiseConv2D, shape: Shape, dtype: str) -> nn.Module:
    return _Conv(layer, shape)


@BUILDERS.register(Conv2DTranspose)
def _conv_transpose(layer: Conv2DTranspose, shape: Shape, dtype: str) -> nn.Module:
    return _ConvTranspose(layer, shape)


@BUILDERS.register(MaxPool, AvgPool)
def _pool(layer: MaxPool | AvgPool, shape: Shape, dtype: str) -> nn.Module:
    return _Pool(isinstance(layer, MaxPool), as_tuple(layer.pool_size, len(shape) - 1))


@BUILDERS.register(GlobalAvgPool)
def _global_avg_pool(layer: GlobalAvgPool, shape: Shape, dtype: str) -> nn.Module:
    return _GlobalAvgPool()


@BUILDERS.register(UpSampling2D)
def _upsampling(layer: UpSampling2D, shape: Shape, dtype: str) -> nn.Module:
    return _UpSampling(as_tuple(layer.size, 2))


@BUILDERS.register(Flatten)
def _flatten(layer: Flatten, shape: Shape, dtype: str) -> nn.Module:
    return nn.Flatten()


@BUILDERS.register(Dropout)
def _dropout(layer: Dropout, shape: Shape, dtype: str) -> nn.Module:
    return nn.Dropout(layer.rate)


@BUILDERS.register(BatchNorm)
def _batch_norm(layer: BatchNorm, shape: Shape, dtype: str) -> nn.Module:
    return _BatchNorm(layer, shape)


@BUILDERS.register(LayerNorm)
def _layer_norm(layer: LayerNorm, shape: Shape, dtype: str) -> nn.Module:
    return nn.LayerNorm(shape[-1], eps=layer.epsilon)


@BUILDERS.register(Activation)
def _activation(layer: Activation, shape: Shape, dtype: str) -> nn.Module:
    return _Activation(layer.name)


@BUILDERS.register(Residual)
def _residual(layer: Residual, shape: Shape, dtype: str) -> nn.Module:
    return _Residual(layer, shape, dtype)


@BUILDERS.register(Composite)
def _composite(layer: Composite, shape: Shape, dtype: str) -> nn.Module:
    return build_sequence(layer.expand(shape), shape, dtype)


@BUILDERS.register(Embedding)
def _embedding(layer: Embedding, shape: Shape, dtype: str) -> nn.Module:
    emb = nn.Embedding(layer.vocab_size, layer.dim)
    init_(emb.weight, "random_uniform", ())  # Keras' "uniform" default: ±0.05
    return emb


@BUILDERS.register(PositionalEmbedding)
def _positional_embedding(layer: PositionalEmbedding, shape: Shape, dtype: str) -> nn.Module:
    return _PositionalEmbedding(layer.vocab_size, layer.positions(shape), layer.dim)


@BUILDERS.register(LSTM, GRU)
def _recurrent(layer: LSTM | GRU, shape: Shape, dtype: str) -> nn.Module:
    return _Recurrent(layer, shape[-1])


@BUILDERS.register(SelfAttention)
def _self_attention(layer: SelfAttention, shape: Shape, dtype: str) -> nn.Module:
    return _Attention(shape[-1], MultiHeadAttention(layer.heads, layer.key_dim))


@BUILDERS.register(MultiHeadAttention)
def _multi_head_attention(layer: MultiHeadAttention, shape: Shape, dtype: str) -> nn.Module:
    return _Attention(shape[-1], layer)


@BUILDERS.register(CustomLayer)
def _custom(layer: CustomLayer, shape: Shape, dtype: str) -> nn.Module:
    """The user's torch builder, held to the parameter count the Arch reports."""
    if "torch" not in layer.frameworks():
        raise ArchError(
            f"{layer!r} has no torch builder (it defines {', '.join(layer.frameworks())}): "
            "run it on a mode of that framework, or add a torch() method"
        )
    module = build_custom(layer, TORCH, shape)  # a new module per call, or ArchError
    if not isinstance(module, nn.Module):
        raise ArchError(
            f"{layer!r}: torch() must return a torch.nn.Module, but returned {module!r:.80}"
        )
    want = layer.trace(shape, dtype).params
    got = count_params(module)
    if got != want:
        raise ArchError(
            f"{layer!r}: the torch builder makes {got} trainable parameters, but the "
            f"{counted_by(layer, shape, dtype)} builder makes {want}; both builders must "
            "make the same model"
        )
    return module


# ---------------------------------------------------------------- modules


class _Activation(nn.Module):
    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.name = name or "linear"
        self.fn = _ACTIVATIONS[self.name]

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class _Dense(nn.Module):
    def __init__(self, fan_in: int, layer: Dense) -> None:
        super().__init__()
        self.linear = _linear(
            fan_in, layer.units, layer.use_bias, layer.kernel_initializer, layer.bias_initializer
        )
        self.activation = _Activation(layer.activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(x))


class _Conv(nn.Module):
    """A 'valid' convolution after TensorFlow's own 'same' padding (odd pixel on the right),
    which ``nn.Conv2d(padding="same")`` does not do for strides > 1. A DepthwiseConv2D is
    the grouped form: one group per input channel, output channel ``c * multiplier + m``."""

    def __init__(self, layer: Conv1D | Conv2D | DepthwiseConv2D, shape: Shape) -> None:
        super().__init__()
        rank, cin = len(shape) - 1, shape[-1]
        kernel = as_tuple(layer.kernel_size, rank)
        strides = as_tuple(layer.strides, rank)
        if isinstance(layer, DepthwiseConv2D):
            cout, groups, init = cin * layer.depth_multiplier, cin, layer.depthwise_initializer
            keras_shape = (*kernel, cin, layer.depth_multiplier)
        else:
            cout, groups, init = layer.filters, 1, layer.kernel_initializer
            keras_shape = (*kernel, cin, cout)
        self.conv: nn.Conv1d | nn.Conv2d
        if rank == 1:
            self.conv = nn.Conv1d(
                cin, cout, kernel[0], strides[0], groups=groups, bias=layer.use_bias
            )
        else:
            k2, s2 = (kernel[0], kernel[1]), (strides[0], strides[1])
            self.conv = nn.Conv2d(cin, cout, k2, s2, groups=groups, bias=layer.use_bias)
        # torch's fan_in: in_channels / groups x kernel elements (a depthwise kernel: 1 x
        # kernel elements, where Keras' fan rule counts cin too); its bias takes the same
        torch_fan = (cin // groups) * math.prod(kernel)
        init_(self.conv.weight, init, keras_shape, torch_fan_in=torch_fan)
        if self.conv.bias is not None:
            init_(self.conv.bias, layer.bias_initializer, (cout,), torch_fan_in=torch_fan)
        pads: list[int] = []
        if layer.padding == "same":  # F.pad lists the last axis first
            for n, k, s in reversed(list(zip(shape[:-1], kernel, strides, strict=True))):
                pads.extend(same_padding(n, k, s))
        self.pads = pads if any(pads) else []
        self.activation = _Activation(layer.activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x.movedim(-1, 1)
        if self.pads:
            x = F.pad(x, self.pads)
        return self.activation(self.conv(x).movedim(1, -1))


class _ConvTranspose(nn.Module):
    """The full transposed convolution, then cropped (or zero-extended) to Keras' output:
    "same" drops the ``max(k - s, 0) // 2`` leading rows TensorFlow's forward 'same' conv
    would have padded; the bias is added after, as the extended rows carry it in Keras."""

    def __init__(self, layer: Conv2DTranspose, shape: Shape) -> None:
        super().__init__()
        kernel, strides = as_tuple(layer.kernel_size, 2), as_tuple(layer.strides, 2)
        cin, cout = shape[-1], layer.filters
        self.weight = nn.Parameter(torch.empty(cin, cout, *kernel))  # torch: (in, out, kh, kw)
        torch_fan = cout * math.prod(kernel)  # nn.ConvTranspose2d's fan_in: weight dim 1
        init_(self.weight, layer.kernel_initializer, (*kernel, cout, cin), torch_fan_in=torch_fan)
        self.bias = nn.Parameter(torch.empty(cout)) if layer.use_bias else None
        if self.bias is not None:
            init_(self.bias, layer.bias_initializer, (cout,), torch_fan_in=torch_fan)
        self.strides = strides
        out = layer.trace(shape, "float32").shape
        pads: list[int] = []
        for n, k, s, o in reversed(list(zip(shape[:-1], kernel, strides, out[:-1], strict=True))):
            left = max(k - s, 0) // 2 if layer.padding == "same" else 0
            pads += [-left, o - ((n - 1) * s + k - left)]  # negative: crop
        self.pads = pads if any(pads) else []
        self.activation = _Activation(layer.activation)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(x.movedim(-1, 1), self.weight, None, self.strides)
        if self.pads:
            y = F.pad(y, self.pads)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return self.activation(y.movedim(1, -1))


class _Pool(nn.Module):
    def __init__(self, is_max: bool, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.is_max, self.sizes = is_max, sizes

    def forward(self, x: Tensor) -> Tensor:
        x = x.movedim(-1, 1)
        if len(self.sizes) == 1:
            fn1 = F.max_pool1d if self.is_max else F.avg_pool1d
            y = fn1(x, self.sizes, self.sizes)
        else:
            fn2 = F.max_pool2d if self.is_max else F.avg_pool2d
            y = fn2(x, self.sizes, self.sizes)
        return y.movedim(1, -1)

    def extra_repr(self) -> str:
        return f"{'max' if self.is_max else 'avg'}, size={self.sizes}"


class _GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(1, x.ndim - 1)))


class _UpSampling(nn.Module):
    """Nearest-neighbour upsampling: each row and column repeated, as Keras' default."""

    def __init__(self, size: tuple[int, ...]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(self.size[0], dim=1).repeat_interleave(self.size[1], dim=2)


class _BatchNorm(nn.BatchNorm1d):
    """Keras' ``BatchNormalization``: statistics of ``axis`` over the batch and every other
    axis, moving statistics kept with Keras' ``momentum`` (torch's is ``1 - momentum``).

    Keras' ``center`` (beta, torch's ``bias``) and ``scale`` (gamma, ``weight``) are
    independent where torch's ``affine`` is both or neither: the one left out is no
    parameter at all (``F.batch_norm`` takes either as None), so the trainable count and
    the state dict's names stay those of ``nn.BatchNorm1d``.
    """

    def __init__(self, layer: BatchNorm, shape: Shape) -> None:
        channels = layer.channels(shape)
        super().__init__(channels, eps=layer.epsilon, momentum=1.0 - layer.momentum)
        if not layer.scale:
            self.register_parameter("weight", None)
        if not layer.center:
            self.register_parameter("bias", None)
        # the normalised axis of a (batch, *shape) tensor, counted from the end
        self.axis = layer.axis if layer.axis < 0 else layer.axis - len(shape) - 1

    def forward(self, x: Tensor) -> Tensor:
        moved = x.movedim(self.axis, -1) if self.axis != -1 else x
        y = super().forward(moved.reshape(-1, moved.shape[-1])).reshape(moved.shape)
        return y.movedim(-1, self.axis) if self.axis != -1 else y


class _PositionalEmbedding(nn.Module):
    """Token embedding plus the position table's first ``length`` rows (Keras: an Embedding
    of the positions 0..length-1); both tables Keras' ``uniform`` (±0.05)."""

    def __init__(self, vocab_size: int, positions: int, dim: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(positions, dim)
        init_(self.token.weight, "random_uniform", ())
        init_(self.position.weight, "random_uniform", ())

    def forward(self, x: Tensor) -> Tensor:
        return self.token(x) + self.position.weight[: x.shape[1]]


class _Residual(nn.Module):
    def __init__(self, layer: Residual, shape: Shape, dtype: str) -> None:
        super().__init__()
        self.body = build_sequence(layer.layers, shape, dtype)
        proj = layer.projection(shape, dtype)
        self.stride = proj.stride if proj else 1
        self.proj = _linear(shape[-1], proj.channels, bias=False) if proj else None

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        if self.stride > 1:  # a strided 1x1 conv == strided slicing, then the channel map
            step = slice(None, None, self.stride)
            skip = x[(slice(None), *([step] * (x.ndim - 2)), slice(None))]
        if self.proj is not None:
            skip = self.proj(skip)
        return self.body(x) + skip


class _Recurrent(nn.Module):
    def __init__(self, layer: LSTM | GRU, features: int) -> None:
        super().__init__()
        u = layer.units
        is_lstm = isinstance(layer, LSTM)
        self.rnn: nn.LSTM | nn.GRU = (nn.LSTM if is_lstm else nn.GRU)(features, u, batch_first=True)
        self.return_sequences = layer.return_sequences
        p = dict(self.rnn.named_parameters())
        with torch.no_grad():  # Keras: kernel (F, gates*u) Glorot, recurrent (u, gates*u)
            _glorot(p["weight_ih_l0"], features, p["weight_ih_l0"].shape[0])
            nn.init.orthogonal_(p["weight_hh_l0"])  # the whole matrix, as Keras does
            p["bias_ih_l0"].zero_()
            p["bias_hh_l0"].zero_()
            if is_lstm:
                p["bias_ih_l0"][u : 2 * u] = 1.0  # unit_forget_bias (torch order i,f,g,o)
        if is_lstm:  # Keras' LSTM has one bias vector: freeze torch's second one at zero
            p["bias_hh_l0"].requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return out if self.return_sequences else out[:, -1]


class _Attention(nn.Module):
    """Keras ``MultiHeadAttention`` as self-attention: q/k/v/output projections (biased
    unless ``use_bias=False``), scaled dot product with scale 1/sqrt(key_dim), optional
    causal mask, dropout on the attention weights while training.

    Kernels are initialised with the fans Keras' EinsumDense uses: (features, heads*dim)
    for q/k/v, (heads*value_dim, features) for the output; biases by their Keras shapes.
    """

    def __init__(self, dim: int, layer: MultiHeadAttention) -> None:
        super().__init__()
        heads, kd, vd = layer.num_heads, layer.key_dim, layer.values
        self.heads, self.key_dim, self.value_dim = heads, kd, vd
        self.causal, self.dropout = layer.use_causal_mask, layer.dropout
        bias, kinit, binit = layer.use_bias, layer.kernel_initializer, layer.bias_initializer
        self.query = _linear(dim, heads * kd, bias, kinit, binit)
        self.key = _linear(dim, heads * kd, bias, kinit, binit)
        self.value = _linear(dim, heads * vd, bias, kinit, binit)
        self.output = _linear(heads * vd, dim, bias, kinit, binit)
        for lin, per_head in ((self.query, kd), (self.key, kd), (self.value, vd)):
            if lin.bias is not None:  # Keras' bias shape (heads, dim): fans differ from 1-D
                init_(lin.bias, binit, (heads, per_head))

    def forward(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape

        def split(t: Tensor, size: int) -> Tensor:
            return t.view(n, length, self.heads, size).transpose(1, 2)

        q, k = split(self.query(x), self.key_dim), split(self.key(x), self.key_dim)
        v = split(self.value(x), self.value_dim)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        return self.output(y.transpose(1, 2).reshape(n, length, self.heads * self.value_dim))
