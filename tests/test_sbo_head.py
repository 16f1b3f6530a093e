"""SpanBERT's span-boundary head: eq. 2 of the paper against a numpy reference, boundaries, gradients, the loss.

The reference recomputes y = LN(GeLU(W2 LN(GeLU(W1 [x_left; x_right; p_offset])))) and the tied decoder from
the parameters and the encoder output, gathering the boundary rows itself, so a head that read the wrong
positions, skipped a layer or decoded with another table differs from it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config_base import base_config, model_config, spanbert_config
from bert_jax.errors import ConfigError
from bert_jax.models import build_model, count_params, init_params
from bert_jax.objectives.losses import build_loss_fn
from bert_jax.objectives.masking import SPAN_KEYS, mask_batch
from bert_jax.training.trainer import abstract_batch

SIZES = dict(vocab_size=60, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, embedding_size=32)


def span_batch(rows: int = 3, length: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """[CLS] text [SEP] pad rows masked by the 'span' scheme (30%, so that every row holds a span)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, SIZES["vocab_size"], (rows, length)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[-1, -6:] = 1, 2, 0
    ids[-1, -7] = 2
    out = mask_batch(
        ids,
        rng=rng,
        vocab_size=60,
        mask_id=3,
        special_ids=[0, 1, 2, 3],
        max_predictions=8,
        mask_rate=0.3,
        scheme="span",
    )
    out["attention_mask"] = (ids != 0).astype(np.int32)
    out["token_type_ids"] = np.zeros_like(ids)
    out["pair_labels"] = np.zeros(rows, np.int32)
    return out


def layer_norm(x, p, eps=1e-12):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))  # exact GeLU, as model.activation='gelu'


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def test_sbo_logits_follow_equation_2_at_the_span_boundaries():
    model = build_model(model_config(sbo_head=True, sbo_positions=5, **SIZES))
    params = init_params(model, jax.random.key(0))
    batch = span_batch()
    out = jax.jit(model.apply)(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        masked_positions=batch["masked_positions"],
        **{k: batch[k] for k in SPAN_KEYS},
    )
    assert out.sbo_logits.shape == (3, 8, 60) and out.mlm_logits.shape == (3, 8, 60)
    p = jax.tree.map(np.asarray, params)
    head, x = p["sbo_head"], np.asarray(out.last_hidden_state, np.float64)
    rows = np.arange(3)[:, None]
    offset = np.minimum(batch["span_offset"], 4)  # beyond the table, offsets share its last entry
    h = np.concatenate(
        [x[rows, batch["span_left"]], x[rows, batch["span_right"]], head["position_embeddings"]["embedding"][offset]],
        -1,
    )
    h = layer_norm(gelu(dense(h, head["dense_1"])), head["layer_norm_1"])
    h = layer_norm(gelu(dense(h, head["dense_2"])), head["layer_norm_2"])
    reference = h @ p["embeddings"]["word_embeddings"]["embedding"].T + head["bias"]
    np.testing.assert_allclose(out.sbo_logits, reference, atol=1e-4)
    assert (batch["span_offset"] > 0).any() and batch["masked_weights"].sum() >= 6
    # heads are not counted as the model's parameters, and the head needs no span inputs outside training
    assert count_params(model) == count_params(build_model(model_config(**SIZES)))
    assert model.apply({"params": params}, batch["input_ids"]).sbo_logits is None


def loss_setup(**masking):
    config = base_config(
        model_config(sbo_head=True, pair_head=False, **SIZES), pair_objective="none", masking=dict(scheme="span")
    )
    config.masking.update(masking)
    model = build_model(config)
    return config, model, init_params(model, jax.random.key(0))


def test_loss_is_mlm_plus_sbo_and_gradients_reach_the_encoder():
    config, model, params = loss_setup()
    batch = jax.tree.map(jnp.asarray, span_batch())
    loss_fn = build_loss_fn(config, model)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, None)
    np.testing.assert_allclose(loss, metrics["mlm_loss"] + metrics["sbo_loss"], rtol=1e-6)
    assert {"sbo_loss", "sbo_accuracy", "mlm_loss", "mlm_accuracy"} <= set(metrics)
    assert metrics["sbo_loss"] > 0.9 * np.log(60)  # untrained: about log(vocab)

    sbo_only = lambda p: loss_fn(p, batch, None)[1]["sbo_loss"]  # noqa: E731
    g = jax.jit(jax.grad(sbo_only))(params)
    norm = lambda tree: float(optax_norm(tree))  # noqa: E731
    assert norm(g["sbo_head"]) > 0 and norm(g["encoder"]) > 0 and norm(g["embeddings"]) > 0
    assert norm(g["mlm_head"]) == 0, "the SBO term must not train the MLM head"
    assert np.isfinite(norm(grads))


def optax_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_config_wiring():
    config = spanbert_config(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, embedding_size=32)
    assert config.model.sbo_head and config.masking.scheme == "span" and config.pair_objective == "none"
    assert config.model.family == "bert" and config.model.vocab_size == 28996
    batch = abstract_batch(config)
    assert all(batch[k].shape == (256, 77) for k in SPAN_KEYS)
    assert not set(SPAN_KEYS) & set(abstract_batch(base_config(model_config())))
    bad, model, _ = loss_setup()
    bad.masking.scheme = "whole_word"
    with pytest.raises(ConfigError, match="masking.scheme=span"):
        build_loss_fn(bad, model)
