"""The BERT-family encoder model: embeddings -> layer stack -> optional heads.

BERT and ALBERT are this one module with different `config.model` numbers
(`embedding_size < hidden_size`, `share_layers=True` for ALBERT).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from bert_jax.models.attention import attention_bias
from bert_jax.models.embeddings import Embeddings
from bert_jax.models.encoder import Encoder
from bert_jax.models.heads import MLMHead, PairHead, Pooler


@flax.struct.dataclass
class EncoderOutput:
    """What the model returns; heads the config does not have are None."""

    last_hidden_state: jax.Array
    pooled_output: jax.Array | None = None
    mlm_logits: jax.Array | None = None
    seq_relationship_logits: jax.Array | None = None


class BertModel(nn.Module):
    """BERT / ALBERT encoder with the pooler, MLM and NSP/SOP heads the config asks for.

    `mask_kind` picks the attention mask (see `attention_bias`); BERT uses
    'padding'. `deterministic=False` turns dropout on and needs a 'dropout' rng.
    With `masked_positions` [batch, predictions], MLM logits are computed only
    at those positions, as BERT's pretraining does: the vocabulary projection
    is then a small part of the step instead of the largest matmul.
    """

    config: object  # FrozenConfigDict of config.model

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        deterministic: bool = True,
        mask_kind: str = "padding",
        masked_positions: jax.Array | None = None,
    ) -> EncoderOutput:
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        embeddings = Embeddings(cfg, name="embeddings")
        x = embeddings(input_ids, token_type_ids, position_ids, deterministic)
        bias = attention_bias(attention_mask, mask_kind, token_type_ids, dtype=jnp.float32)
        x = Encoder(cfg, deterministic, name="encoder")(x, bias)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        out = EncoderOutput(last_hidden_state=x)
        if cfg.use_pooler:
            out = out.replace(pooled_output=Pooler(cfg, name="pooler")(x))
        if cfg.mlm_head:
            h = x if masked_positions is None else jnp.take_along_axis(x, masked_positions[..., None], axis=1)
            out = out.replace(mlm_logits=MLMHead(cfg, name="mlm_head")(h, embeddings.attend))
        if cfg.pair_head:
            if not cfg.use_pooler:
                raise ValueError("model.pair_head needs model.use_pooler=True (it classifies the pooled output)")
            logits = PairHead(cfg, deterministic, name="pair_head")(out.pooled_output)
            out = out.replace(seq_relationship_logits=logits)
        return out
