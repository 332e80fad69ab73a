"""The trained-model handle of the JAX mode (a Keras model on JAX, in its worker process), its
checkpoint and export formats (``savedmodel`` through jax2tf, ``mlflow``): see ``_keras_export``.
"""

from protolab.backends._keras_export import FORMATS, KerasModel, load_checkpoint, load_exported

__all__ = ["FORMATS", "KerasModel", "load_checkpoint", "load_exported"]
