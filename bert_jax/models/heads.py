"""Heads on top of the encoder: pooler, tied MLM head, the NSP/SOP pair classifier, ELECTRA's RTD head,
SpanBERT's span-boundary head."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.bias import add_bias
from bert_jax.models.common import activation, compute_dtype, dense, kernel_init, layer_norm, zeros_init
from bert_jax.models.dropout import Dropout


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
        return tied_decode(self, h, decode)


def tied_decode(module: nn.Module, h: jax.Array, decode: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Vocabulary logits of `h` [..., E]: the tied word table (`Embeddings.attend`) plus the module's own bias."""
    bias = module.param("bias", zeros_init(("vocab",)), (module.config.vocab_size,), jnp.float32)
    return add_bias(decode(h), bias)


class SpanBoundaryHead(nn.Module):
    """SpanBERT's span-boundary objective (Joshi et al. 2020, eq. 2), predicting a masked token from outside its span.

    h0 = [x_left; x_right; p_offset] (the encodings of the tokens just before
    and just after the span, and a learned embedding of the token's offset in
    the span), h1 = LayerNorm(GeLU(W1 h0)), y = LayerNorm(GeLU(W2 h1)), then
    the tied decoder as in `MLMHead`. `sbo_positions` offsets exist; a larger
    one shares the last entry. Pretraining-only, like `transformers`' heads.
    """

    config: object

    @nn.compact
    def __call__(
        self,
        left: jax.Array,
        right: jax.Array,
        offset: jax.Array,
        decode: Callable[[jax.Array], jax.Array],
    ) -> jax.Array:
        cfg = self.config
        positions = nn.Embed(
            cfg.sbo_positions,
            cfg.hidden_size,
            dtype=compute_dtype(cfg),
            param_dtype=jnp.float32,
            embedding_init=kernel_init(cfg, (None, "embed")),
            name="position_embeddings",
        )(jnp.minimum(offset, cfg.sbo_positions - 1))
        h = jnp.concatenate([left, right, positions.astype(left.dtype)], axis=-1)
        act = activation(cfg.activation)
        h = layer_norm(cfg, "layer_norm_1")(act(dense(cfg, cfg.hidden_size, ("mlp", "embed"), "dense_1")(h)))
        h = layer_norm(cfg, "layer_norm_2")(act(dense(cfg, cfg.embedding_size, ("mlp", "embed"), "dense_2")(h)))
        return tied_decode(self, h, decode)


class PairHead(nn.Module):
    """Two-way classifier on the pooled output: NSP for BERT, SOP for ALBERT."""

    config: object
    deterministic: bool = True

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        cfg = self.config
        pooled = Dropout(cfg.classifier_dropout_rate)(pooled, deterministic=self.deterministic)
        return dense(cfg, 2, ("embed", None), "classifier")(pooled)


class RTDHead(nn.Module):
    """ELECTRA's replaced-token detection: Dense H->H, activation, Dense H->1 on every token.

    Returns one logit per token ([batch, length]); positive means "replaced".
    """

    config: object

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        h = activation(cfg.activation)(dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(hidden))
        return dense(cfg, 1, ("mlp", None), "prediction")(h)[..., 0]
