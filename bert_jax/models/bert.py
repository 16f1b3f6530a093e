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
from bert_jax.models.common import constrain, dense
from bert_jax.models.embeddings import Embeddings
from bert_jax.models.encoder import Encoder
from bert_jax.models.heads import MLMHead, PairHead, Pooler, RTDHead, SpanBoundaryHead

ACTIVATION = ("batch", "length", "embed")  # logical axes of the hidden states (training/partitioning.py)


@flax.struct.dataclass
class EncoderOutput:
    """What the model returns; heads the config does not have are None."""

    last_hidden_state: jax.Array
    pooled_output: jax.Array | None = None
    mlm_logits: jax.Array | None = None
    seq_relationship_logits: jax.Array | None = None
    rtd_logits: jax.Array | None = None  # [batch, length], ELECTRA's discriminator: > 0 means "replaced"
    sbo_logits: jax.Array | None = None  # [batch, predictions, vocab], SpanBERT's span-boundary objective


def default_position_ids(input_ids: jax.Array, cfg) -> jax.Array:
    """0, 1, 2, ... (BERT), or with `position_ids_from_padding` RoBERTa's fairseq numbering.

    RoBERTa numbers real tokens from `pad_token_id + 1` and gives padding the
    position `pad_token_id` (`transformers`' `create_position_ids_from_input_ids`),
    so its checkpoints need `max_position_embeddings = max length + pad_token_id + 1`.
    """
    if not cfg.position_ids_from_padding:
        return jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    real = (input_ids != cfg.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=-1) * real + cfg.pad_token_id


def first_position(cfg) -> int:
    """The position id of a text's first token: 0, or RoBERTa's pad_token_id + 1."""
    return cfg.pad_token_id + 1 if cfg.position_ids_from_padding else 0


def max_sequence_length(cfg) -> int:
    """The longest input the position table covers without `position_ids` (RoBERTa loses pad_token_id + 1)."""
    return cfg.max_position_embeddings - first_position(cfg)


class BertModel(nn.Module):
    """BERT / ALBERT encoder with the pooler, MLM and NSP/SOP heads the config asks for.

    `mask_kind` picks the attention mask (see `attention_bias`); BERT uses
    'padding'. `deterministic=False` turns dropout on and needs a 'dropout' rng.
    With `masked_positions` [batch, predictions], MLM logits are computed only
    at those positions, as BERT's pretraining does: the vocabulary projection
    is then a small part of the step instead of the largest matmul.

    With `model.sbo_head` (SpanBERT), `span_left`, `span_right` and
    `span_offset` [batch, predictions] (from the 'span' masking) give the
    span-boundary logits of each masked slot; without them (and outside
    `init`) the head is not run.

    `pool_index` [examples] (packed rows, mask_kind='packed'): the flat
    positions (row * length + column) of each example's first token, which
    the pooler reads instead of every row's position 0; pooled_output is then
    [examples, hidden].

    `shared_embeddings` (ELECTRA) is an `Embeddings` owned by a parent module
    and used by several encoders; it stops at `embedding_size`, and each
    encoder projects to its own `hidden_size` (`embeddings_project`).
    """

    config: object  # FrozenConfigDict of config.model
    shared_embeddings: nn.Module | None = None

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
        span_left: jax.Array | None = None,
        span_right: jax.Array | None = None,
        span_offset: jax.Array | None = None,
        pool_index: jax.Array | None = None,
    ) -> EncoderOutput:
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = default_position_ids(input_ids, cfg)
        shared = self.shared_embeddings is not None
        embeddings = self.shared_embeddings if shared else Embeddings(cfg, name="embeddings")
        x = constrain(embeddings(input_ids, token_type_ids, position_ids, deterministic), ACTIVATION)
        if shared and cfg.embedding_size != cfg.hidden_size:
            x = dense(cfg, cfg.hidden_size, ("embed", "mlp"), "embeddings_project")(x)
        bias = attention_bias(attention_mask, mask_kind, token_type_ids, dtype=jnp.float32)
        x = Encoder(cfg, deterministic, name="encoder")(x, bias)
        x = constrain(x, ACTIVATION)
        out = EncoderOutput(last_hidden_state=x)
        if cfg.use_pooler:
            first = x if pool_index is None else x.reshape(-1, 1, x.shape[-1])[pool_index]
            out = out.replace(pooled_output=Pooler(cfg, name="pooler")(first))
        if cfg.mlm_head:
            h = x if masked_positions is None else jnp.take_along_axis(x, masked_positions[..., None], axis=1)
            logits = MLMHead(cfg, name="mlm_head")(h, embeddings.attend)
            out = out.replace(mlm_logits=constrain(logits, ("batch", "length", "vocab")))
        if cfg.pair_head:
            if not cfg.use_pooler:
                raise ValueError("model.pair_head needs model.use_pooler=True (it classifies the pooled output)")
            logits = PairHead(cfg, deterministic, name="pair_head")(out.pooled_output)
            out = out.replace(seq_relationship_logits=logits)
        if cfg.rtd_head:
            out = out.replace(rtd_logits=RTDHead(cfg, name="rtd_head")(x))
        if cfg.sbo_head and (span_left is not None or self.is_initializing()):
            if span_left is None:  # init: one dummy slot creates the parameters
                span_left = span_right = span_offset = jnp.zeros((x.shape[0], 1), jnp.int32)
            at = lambda positions: jnp.take_along_axis(x, positions[..., None], axis=1)  # noqa: E731
            logits = SpanBoundaryHead(cfg, name="sbo_head")(
                at(span_left), at(span_right), span_offset, embeddings.attend
            )
            out = out.replace(sbo_logits=logits)
        return out
