"""Pure flax.linen modules of the BERT family; no data or training code."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from bert_jax.config_base import with_defaults_for_unset
from bert_jax.models.bert import BertModel, EncoderOutput

__all__ = ["BertModel", "EncoderOutput", "build_model", "init_params", "count_params"]


def _model_block(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model block, with fields a fine-tuning config leaves to the checkpoint (None) at their defaults."""
    return with_defaults_for_unset(config.model if "model" in config else config)


def build_model(config: ml_collections.ConfigDict) -> BertModel:
    """The flax module for a whole config (or its `model` block).

    A whole config with `objective='electra'` gives ELECTRA's joint
    generator + discriminator (`models/electra.py`); its `model` block alone
    gives the discriminator.
    """
    if "model" in config and config.get("objective") == "electra":
        from bert_jax.models.electra import build_electra

        return build_electra(config)
    return BertModel(ml_collections.FrozenConfigDict(_model_block(config)))


def _dummy_inputs(model: BertModel, batch: int = 1, length: int = 8) -> jax.Array:
    return jnp.zeros((batch, min(length, model.config.max_position_embeddings)), jnp.int32)


def init_params(model: BertModel, rng: jax.Array) -> dict:
    """Fresh float32 parameters, with the logical-axis boxes removed."""
    variables = model.init(rng, _dummy_inputs(model))
    return nn.meta.unbox(variables["params"])


def param_shapes(model: BertModel) -> dict:
    """The parameter tree as ShapeDtypeStructs, without allocating anything."""
    variables = jax.eval_shape(model.init, jax.random.key(0), _dummy_inputs(model))
    return nn.meta.unbox(variables["params"])


def count_params(model: BertModel, include_heads: bool = False) -> int:
    """Number of parameters; by default embeddings + encoder + pooler, as papers count them.

    Heads are left out wherever they sit (ELECTRA's joint model has them in
    each tower).
    """
    shapes = param_shapes(model)
    if not include_heads:
        shapes = _without_heads(shapes)
    return sum(int(x.size) for x in jax.tree.leaves(shapes))


HEADS = ("mlm_head", "pair_head", "rtd_head", "sbo_head")


def _without_heads(tree: dict) -> dict:
    return {k: _without_heads(v) if isinstance(v, dict) else v for k, v in tree.items() if k not in HEADS}
