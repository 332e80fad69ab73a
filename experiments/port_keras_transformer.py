"""Port of the Keras example "Text classification with Transformer", on digits pixels as tokens.

Original: https://keras.io/examples/nlp/text_classification_with_transformer/ (source:
https://github.com/keras-team/keras-io/blob/master/examples/nlp/text_classification_with_transformer.py).
The model is the original's: TokenAndPositionEmbedding -> TransformerBlock (multi-head
self-attention, dropout, residual + LayerNorm; a relu/linear FFN, dropout, residual +
LayerNorm) -> GlobalAveragePooling1D -> Dropout(0.1) -> Dense(20, relu) -> Dropout(0.1) ->
Dense(classes). What changed, and why (docs/porting.md has it side by side):

- Data: each 8x8 digit is a "sentence" of 64 tokens, its pixel intensities 0..16 (the
  values scikit-learn ships; protolab's ``digits`` holds them as v / 16, so the embedding
  layer rounds ``x * 16`` back to ids): vocab_size 17, maxlen 64, 10 classes instead of
  IMDB's 20,000 words, 200 tokens, 2 classes.
- ``TokenAndPositionEmbedding`` is a custom layer (torch + Keras builders), because the
  token ids come from float pixels: protolab's own ``PositionalEmbedding`` (the same two
  tables) reads integer ids only, as the first layer of an integer dataset.
- Everything else is built in: ``L.TransformerBlock`` is the example's block (post-norm,
  ``key_dim = embed_dim``, LayerNorm epsilon 1e-6), and the softmax head stays (protolab
  then trains on probabilities with Keras' clipped cross-entropy).

Run it paired: ``protolab sweep configs/port_keras_transformer.yaml``.
"""

import math

import keras
import torch

import protolab as pl
from protolab import layers as L


class _TokenAndPositionTorch(torch.nn.Module):
    def __init__(self, length: int, maxlen: int, vocab_size: int, dim: int, scale: float) -> None:
        super().__init__()
        self.length, self.vocab_size, self.scale = length, vocab_size, scale
        self.token_emb = torch.nn.Embedding(vocab_size, dim)
        self.pos_emb = torch.nn.Embedding(maxlen, dim)
        for emb in (self.token_emb, self.pos_emb):  # Keras' Embedding default: uniform(±0.05)
            torch.nn.init.uniform_(emb.weight, -0.05, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.round(x.reshape(-1, self.length) * self.scale).long()
        ids = ids.clamp(0, self.vocab_size - 1)
        positions = torch.arange(self.length, device=x.device)
        return self.token_emb(ids) + self.pos_emb(positions)


class _TokenAndPositionKeras(keras.layers.Layer):
    """The original's layer, plus the reshape/rounding that turns pixels into token ids."""

    def __init__(
        self, length: int, maxlen: int, vocab_size: int, dim: int, scale: float, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.length, self.vocab_size, self.scale = length, vocab_size, scale
        self.token_emb = keras.layers.Embedding(input_dim=vocab_size, output_dim=dim)
        self.pos_emb = keras.layers.Embedding(input_dim=maxlen, output_dim=dim)

    def call(self, x):  # type: ignore[no-untyped-def]
        ids = keras.ops.round(keras.ops.reshape(x, (-1, self.length)) * self.scale)
        ids = keras.ops.clip(keras.ops.cast(ids, "int32"), 0, self.vocab_size - 1)
        positions = self.pos_emb(keras.ops.arange(start=0, stop=self.length, step=1))
        return self.token_emb(ids) + positions


@pl.layer
class TokenAndPositionEmbedding(pl.CustomLayer):
    """Token + position embeddings of a flattened input whose values are ``id / scale``."""

    maxlen: int = 64
    vocab_size: int = 17
    embed_dim: int = 32
    scale: float = 16.0  # digits: x = intensity / 16; token ids stored as floats: 1.0

    def _length(self, input_shape: tuple[int, ...]) -> int:
        length = math.prod(input_shape)
        if length > self.maxlen:
            raise ValueError(f"an input of {length} tokens is longer than maxlen={self.maxlen}")
        return length

    def torch(self, input_shape: tuple[int, ...]) -> torch.nn.Module:
        length = self._length(input_shape)
        return _TokenAndPositionTorch(
            length, self.maxlen, self.vocab_size, self.embed_dim, self.scale
        )

    def keras(self, input_shape: tuple[int, ...]) -> keras.layers.Layer:
        length = self._length(input_shape)
        return _TokenAndPositionKeras(
            length, self.maxlen, self.vocab_size, self.embed_dim, self.scale
        )


def transformer(
    embed_dim: int = 32,
    num_heads: int = 2,
    ff_dim: int = 32,
    rate: float = 0.1,
    dropout: float = 0.1,
    maxlen: int = 64,
    vocab_size: int = 17,
    classes: int = 10,
    scale: float = 16.0,
) -> pl.Arch:
    return pl.Arch(
        TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim, scale),
        # the original's TransformerBlock: key_dim = embed_dim, LayerNorm epsilon 1e-6
        L.TransformerBlock(embed_dim, num_heads, ff_dim, rate=rate),
        L.GlobalAveragePooling1D(),
        L.Dropout(dropout),
        L.Dense(20, activation="relu"),
        L.Dropout(dropout),
        L.Dense(classes, activation="softmax"),
    )


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    # the first choice and the middle of a range are the defaults: the original's values
    return transformer(
        embed_dim=space.choice("embed_dim", [32, 16, 64]),
        num_heads=space.choice("num_heads", [2, 1, 4]),
        ff_dim=space.choice("ff_dim", [32, 64, 128]),
        rate=space.float("rate", 0.0, 0.2),
        dropout=space.float("dropout", 0.0, 0.2),
    )
