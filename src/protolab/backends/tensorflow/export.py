"""The trained-model handle of the TensorFlow modes (a Keras model on TensorFlow), its
checkpoint and export formats (``savedmodel``, ``mlflow``): see ``_keras_export``."""

from protolab.backends._keras_export import FORMATS, KerasModel, load_checkpoint, load_exported

__all__ = ["FORMATS", "KerasModel", "load_checkpoint", "load_exported"]
