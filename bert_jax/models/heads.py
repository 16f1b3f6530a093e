"""Heads on top of the encoder: pooler, tied MLM head, and the NSP/SOP pair classifier."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.common import activation, dense, layer_norm, zeros_init


class Pooler(nn.Module):
    """tanh(Dense(hidden of the first token)), BERT's sentence representation."""

    config: object

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        return jnp.tanh(dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(hidden[:, 0]))


class MLMHead(nn.Module):
    """Transform (Dense H->E, activation, LayerNorm) then the tied word-table decoder plus a bias."""

    config: object

    @nn.compact
    def __call__(self, hidden: jax.Array, decode: Callable[[jax.Array], jax.Array]) -> jax.Array:
        cfg = self.config
        h = dense(cfg, cfg.embedding_size, ("mlp", "embed"), "transform")(hidden)
        h = layer_norm(cfg, "layer_norm")(activation(cfg.activation)(h))
        bias = self.param("bias", zeros_init(("vocab",)), (cfg.vocab_size,), jnp.float32)
        return decode(h) + bias.astype(h.dtype)


class PairHead(nn.Module):
    """Two-way classifier on the pooled output: NSP for BERT, SOP for ALBERT."""

    config: object
    deterministic: bool = True

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        cfg = self.config
        pooled = nn.Dropout(cfg.classifier_dropout_rate)(pooled, deterministic=self.deterministic)
        return dense(cfg, 2, ("embed", None), "classifier")(pooled)
