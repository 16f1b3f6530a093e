"""Word, position and token-type embeddings, LayerNorm, dropout, and ALBERT's E->H projection."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.common import compute_dtype, dense, kernel_init, layer_norm, mixed_precision_dot_general
from bert_jax.models.dropout import Dropout


class Embeddings(nn.Module):
    """Sum of the three embeddings in `embedding_size` dims, normalised, then projected.

    The projection to `hidden_size` exists only when the sizes differ (ALBERT's
    factorized embedding parameterisation); the word table is shared with the
    MLM decoder through `attend`.
    """

    config: object  # FrozenConfigDict of config.model

    def setup(self):
        cfg = self.config
        embed = lambda n, name: nn.Embed(  # noqa: E731
            n,
            cfg.embedding_size,
            dtype=compute_dtype(cfg),
            param_dtype=jnp.float32,
            embedding_init=kernel_init(cfg, ("vocab", "embed")),
            name=name,
        )
        self.word_embeddings = embed(cfg.vocab_size, "word_embeddings")
        self.position_embeddings = embed(cfg.max_position_embeddings, "position_embeddings")
        self.token_type_embeddings = embed(cfg.type_vocab_size, "token_type_embeddings")
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.dropout = Dropout(cfg.hidden_dropout_rate)
        if cfg.embedding_size != cfg.hidden_size:
            self.projection = dense(cfg, cfg.hidden_size, ("embed", "mlp"), "projection")

    def __call__(
        self, input_ids: jax.Array, token_type_ids: jax.Array, position_ids: jax.Array, deterministic: bool
    ) -> jax.Array:
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        x = self.dropout(self.layer_norm(x), deterministic=deterministic)
        if self.config.embedding_size != self.config.hidden_size:
            x = self.projection(x)
        return x

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits over the vocabulary from the tied word table (the MLM decoder)."""
        table = jnp.asarray(self.word_embeddings.embedding, x.dtype)
        return mixed_precision_dot_general(x, table, (((x.ndim - 1,), (1,)), ((), ())))
