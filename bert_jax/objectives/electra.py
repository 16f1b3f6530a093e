"""ELECTRA's objective: generator MLM + `rtd_weight` x replaced-token detection, one update for both models.

As in ELECTRA's `run_pretraining.py`: the generator predicts the masked
tokens; a token is sampled from its softmax at every masked position (the
gradient does not flow through sampling); the discriminator sees the
original sequence with those samples written in and labels each real token
"replaced" when it differs from the original (a sample equal to the original
counts as original). The RTD loss is a sigmoid cross-entropy over all real
tokens, divided by the global batch's token count (`count_totals`), so
micro-batch sums stay exact under gradient accumulation.

Randomness: the train step's key is split into the generator's dropout, the
discriminator's dropout and the sampling key. Evaluation (no key) samples
with a fixed key, so every evaluation corrupts its batches the same way for
the same parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax.objectives.losses import LossFn, apply_model, classification_terms, count_totals

EVAL_SAMPLING_SEED = 0


def corrupt(
    input_ids: jax.Array,
    masked_positions: jax.Array,
    masked_ids: jax.Array,
    masked_weights: jax.Array,
    mlm_logits: jax.Array,
    rng: jax.Array,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """(the discriminator's input, the replaced labels [batch, length] bool).

    `input_ids` is the generator's (masked) input; samples from
    `mlm_logits / temperature` [batch, predictions, vocab] go to every used
    masked slot (`masked_weights > 0`); unused slots change nothing.
    """
    logits = jax.lax.stop_gradient(mlm_logits.astype(jnp.float32)) / temperature
    sampled = jax.random.categorical(rng, logits, axis=-1).astype(input_ids.dtype)  # Gumbel-max
    used = masked_weights > 0
    current = jnp.take_along_axis(input_ids, masked_positions, axis=1)
    rows = jnp.arange(input_ids.shape[0])[:, None]

    def write(values):  # adds deltas, so that unused slots (position 0, delta 0) may repeat harmlessly
        delta = jnp.where(used, values - current, 0)
        return input_ids + jnp.zeros_like(input_ids).at[rows, masked_positions].add(delta)

    original, corrupted = write(masked_ids.astype(input_ids.dtype)), write(sampled)
    return corrupted, corrupted != original


def replaced_token_terms(
    logits: jax.Array, replaced: jax.Array, weights: jax.Array, denominator: jax.Array, ratios: bool
) -> tuple[jax.Array, dict]:
    """Sigmoid cross-entropy and accuracy over the weighted (real) tokens, as `rtd_*` metrics.

    `rtd_replaced_fraction` is the share of real tokens that were replaced:
    always answering "original" scores 1 minus it. With `ratios`,
    precision and recall on the replaced tokens are added; they are ratios
    of this batch's counts, which do not add up over micro-batches, so the
    loss only reports them when it runs on a whole batch (evaluation).
    """
    logits = logits.astype(jnp.float32)
    labels = replaced.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    loss = (optax.sigmoid_binary_cross_entropy(logits, labels) * weights).sum() / denominator
    predicted = (jax.lax.stop_gradient(logits) > 0).astype(jnp.float32)
    hits = (predicted == labels).astype(jnp.float32)
    metrics = {
        "rtd_loss": loss,
        "rtd_accuracy": (hits * weights).sum() / denominator,
        "rtd_replaced_fraction": (labels * weights).sum() / denominator,
    }
    if ratios:
        true_positives = (predicted * labels * weights).sum()
        metrics["rtd_precision"] = true_positives / jnp.maximum((predicted * weights).sum(), 1.0)
        metrics["rtd_recall"] = true_positives / jnp.maximum((labels * weights).sum(), 1.0)
    return loss, metrics


def electra_loss_fn(config: ml_collections.ConfigDict, model) -> LossFn:
    """The loss of `build_model(config)` for `objective='electra'` (see the module docstring)."""
    rtd_weight, temperature = config.electra.rtd_weight, config.electra.temperature

    def loss_fn(params, batch, rng, totals=None):
        totals = count_totals(batch) if totals is None else totals
        if rng is None:
            gen_rng = disc_rng = None
            sample_rng = jax.random.PRNGKey(EVAL_SAMPLING_SEED)
        else:
            gen_rng, disc_rng, sample_rng = jax.random.split(rng, 3)
        gen = apply_model(model, params, batch, gen_rng, method="generate", masked_positions=batch["masked_positions"])
        mlm_loss, metrics = classification_terms(
            gen.mlm_logits, batch["masked_ids"], batch["masked_weights"], totals["masked"], "mlm"
        )
        corrupted, replaced = corrupt(
            batch["input_ids"],
            batch["masked_positions"],
            batch["masked_ids"],
            batch["masked_weights"],
            gen.mlm_logits,
            sample_rng,
            temperature,
        )
        disc = apply_model(model, params, dict(batch, input_ids=corrupted), disc_rng, method="discriminate")
        rtd_loss, rtd_metrics = replaced_token_terms(
            disc.rtd_logits, replaced, batch["attention_mask"], totals["tokens"], ratios=rng is None
        )
        loss = mlm_loss + rtd_weight * rtd_loss
        metrics.update(rtd_metrics, loss=loss)
        return loss, metrics

    return loss_fn
