"""The Arch as a Keras 3 model on JAX: the shared Keras builder, Keras' own dropout.

JAX's counter-based RNG is cheap inside a jitted program, so Keras' ``Dropout`` (its seed
state a non-trainable variable threaded through ``stateless_call``) needs no replacement.
"""

from protolab.backends._keras_nn import build_keras as build
from protolab.backends._keras_nn import count_params

__all__ = ["build", "count_params"]
