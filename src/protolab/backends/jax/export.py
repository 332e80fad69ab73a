"""The trained-model handle of the JAX mode (a Keras model on JAX, in its worker process)."""

from protolab.backends._keras_export import KerasModel

__all__ = ["KerasModel"]
