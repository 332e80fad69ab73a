"""Each optimizer by name, its twin class in each framework, and each option's twin keyword.

One table, read by both families (``backends/torch/core.py`` and ``_keras_optim.py``), so an
option means the same on every mode: a config names ``rho`` once and PyTorch's RMSprop gets
``alpha=`` while Keras' gets ``rho=``. Where the frameworks' defaults differ, protolab's
default is ONE value applied on both: Keras' (``eps`` 1e-7 where PyTorch has 1e-8 or 1e-6,
Adadelta's ``rho`` 0.95 where PyTorch has 0.9, RMSprop's ``rho`` 0.9 where PyTorch's
``alpha`` is 0.99, Adagrad's starting accumulator 0.1 where PyTorch starts at 0), except
SGD's momentum, 0.9 as results were measured with since protolab began. The learning rate is
always ``train.lr`` (Adadelta's 1.0 in PyTorch, 0.001 in Keras, is not used).

Weight decay is decoupled on Keras (every Keras 3 optimizer); on PyTorch it is decoupled for
adam, adamw and nadam (``AdamW``, ``NAdam(decoupled_weight_decay=True)``) and an L2 term in
the gradient for the others, as ``torch.optim`` applies it (README, known differences).

Only plain Python here: the config names the same optimizers and options
(``protolab.config.OPTIMIZER_OPTIONS``, a rule); a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protolab._frameworks import KERAS, TORCH

__all__ = [
    "CUSTOM",
    "OPTIMIZER_TWINS",
    "Twin",
    "keras_arguments",
    "optimizer_frameworks",
    "torch_arguments",
]

#: the optimizer name that trains with the script's ``protolab.Optimizer`` factories
CUSTOM = "custom"

OptionValue = float | bool | tuple[float, ...]
_ADAM_LIKE: dict[str, OptionValue] = {"betas": (0.9, 0.999), "eps": 1e-7}


@dataclass(frozen=True)
class Twin:
    """One optimizer: its class in each framework and every option with protolab's default.

    ``torch`` is None when ``torch.optim`` has no such optimizer (Lion): it trains on the
    Keras modes only, and a config asking a PyTorch mode for it is refused up front.
    """

    torch: str | None
    keras: str
    defaults: Mapping[str, OptionValue]
    torch_fixed: Mapping[str, OptionValue] = field(default_factory=dict)  # matches Keras


# option -> (PyTorch's keyword, Keras' keyword); betas are Keras' beta_1 and beta_2
_KEYWORDS: dict[str, tuple[str, str]] = {
    "eps": ("eps", "epsilon"),
    "rho": ("rho", "rho"),
    "momentum": ("momentum", "momentum"),
    "nesterov": ("nesterov", "nesterov"),
    "centered": ("centered", "centered"),
    "amsgrad": ("amsgrad", "amsgrad"),
    "initial_accumulator_value": ("initial_accumulator_value", "initial_accumulator_value"),
}
# per optimizer, where its option's PyTorch keyword differs from the one above
_TORCH_RENAMED: dict[tuple[str, str], str] = {("rmsprop", "rho"): "alpha"}

OPTIMIZER_TWINS: dict[str, Twin] = {
    "adam": Twin("AdamW", "AdamW", {**_ADAM_LIKE, "amsgrad": False}),
    "adamw": Twin("AdamW", "AdamW", {**_ADAM_LIKE, "amsgrad": False}),
    "sgd": Twin("SGD", "SGD", {"momentum": 0.9, "nesterov": False}),
    "rmsprop": Twin(
        "RMSprop", "RMSprop", {"rho": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False}
    ),
    "adagrad": Twin("Adagrad", "Adagrad", {"eps": 1e-7, "initial_accumulator_value": 0.1}),
    "adadelta": Twin("Adadelta", "Adadelta", {"rho": 0.95, "eps": 1e-7}),
    "adamax": Twin("Adamax", "Adamax", dict(_ADAM_LIKE)),
    # Keras 3's Nadam warms its momentum up as 0.96 ** step: PyTorch's momentum_decay=1.0
    # (its default, 0.004, is the paper's slower warm-up, which Keras 3 cannot take)
    "nadam": Twin(
        "NAdam", "Nadam", dict(_ADAM_LIKE), {"decoupled_weight_decay": True, "momentum_decay": 1.0}
    ),
    "lion": Twin(None, "Lion", {"betas": (0.9, 0.99)}),
    CUSTOM: Twin(None, "", {}),  # the script's factories: no options, no table entry used
}


def optimizer_frameworks(name: str) -> tuple[str, ...]:
    """The frameworks that have optimizer ``name`` (a custom one: whichever the script gives)."""
    twin = OPTIMIZER_TWINS[name]
    if name == CUSTOM:
        return (TORCH, KERAS)
    return (TORCH, KERAS) if twin.torch else (KERAS,)


def _options(name: str, given: Mapping[str, OptionValue]) -> tuple[Twin, dict[str, OptionValue]]:
    twin = OPTIMIZER_TWINS.get(name)
    if twin is None or name == CUSTOM:
        allowed = ", ".join(n for n in OPTIMIZER_TWINS if n != CUSTOM)
        raise ValueError(f"unknown optimizer {name!r}; allowed: {allowed}")
    unknown = sorted(set(given) - set(twin.defaults))
    if unknown:
        raise ValueError(
            f"{unknown[0]} is not an option of optimizer {name} "
            f"(it takes {', '.join(twin.defaults) or 'none'})"
        )
    return twin, {**twin.defaults, **given}


def torch_arguments(
    name: str, given: Mapping[str, OptionValue], weight_decay: float
) -> tuple[str, dict[str, OptionValue]]:
    """(the ``torch.optim`` class name, its keyword arguments but ``lr``) for ``name``."""
    twin, options = _options(name, given)
    if twin.torch is None:
        raise ValueError(
            f"optimizer {name!r} has no PyTorch twin (torch.optim has no {twin.keras}); "
            "it trains on the Keras modes only"
        )
    out: dict[str, OptionValue] = {"weight_decay": weight_decay, **twin.torch_fixed}
    for option, value in options.items():
        if option == "betas":
            out["betas"] = tuple(value)  # type: ignore[arg-type]
        else:
            out[_TORCH_RENAMED.get((name, option), _KEYWORDS[option][0])] = value
    return twin.torch, out


def keras_arguments(
    name: str, given: Mapping[str, OptionValue], weight_decay: float
) -> tuple[str, dict[str, OptionValue | None]]:
    """(the ``keras.optimizers`` class name, its keyword arguments but ``learning_rate``)."""
    twin, options = _options(name, given)
    # AdamW takes 0 (its own default is 0.004); the others leave decay off with None
    decay = weight_decay if (weight_decay or twin.keras == "AdamW") else None
    out: dict[str, OptionValue | None] = {"weight_decay": decay}
    for option, value in options.items():
        if option == "betas":
            out["beta_1"], out["beta_2"] = value  # type: ignore[misc]
        else:
            out[_KEYWORDS[option][1]] = value
    return twin.keras, out
