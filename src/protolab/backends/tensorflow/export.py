"""The trained-model handle of the TensorFlow modes (a Keras model on TensorFlow)."""

from protolab.backends._keras_export import KerasModel

__all__ = ["KerasModel"]
