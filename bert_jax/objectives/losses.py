"""Pretraining losses: one function per objective family, chosen by `config.objective`.

A loss function has the signature `loss_fn(params, batch, rng, totals) ->
(loss, metrics)`. `rng` is the dropout key (None: deterministic, for
evaluation). Means are sums divided by `totals` (`count_totals` of the
whole global batch; None: of this batch), so that summing the values of
micro-batches gives exactly the full batch's loss and gradient (gradient
accumulation in `training/steps.py`).

New objectives register here (`LOSS_BUILDERS`) and reuse the term helpers,
so the train loop never changes for a new family.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax.errors import ConfigError
from bert_jax.models.dropout import dropout_rngs

LossFn = Callable[[dict, dict, jax.Array | None, dict | None], tuple[jax.Array, dict]]


def count_totals(batch: dict) -> dict[str, jax.Array]:
    """What losses divide by: masked positions, sequences and real tokens of `batch`.

    The train step computes these once for the global batch and passes them
    to every micro-batch's loss.
    """
    return {
        "masked": jnp.maximum(batch["masked_weights"].sum(), 1.0),
        "rows": jnp.asarray(batch["input_ids"].shape[0], jnp.float32),
        "tokens": jnp.maximum(batch["attention_mask"].sum().astype(jnp.float32), 1.0),
    }


def accuracy_hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the label's logit is the largest (ties count as hits).

    Written as `logit[label] >= max(logits)` rather than `argmax == label`:
    XLA:CPU runs a vocabulary-wide argmax as a slow scalar loop
    (bench/RESULTS_training.md, about 10% of a bert_tiny step).
    """
    logits = jax.lax.stop_gradient(logits)
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return (label_logit >= logits.max(-1)).astype(jnp.float32)


def classification_terms(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, denominator: jax.Array, name: str
) -> tuple[jax.Array, dict]:
    """Weighted softmax cross-entropy and accuracy, as `{name}_loss` and `{name}_accuracy`."""
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    loss = (ce * weights).sum() / denominator
    accuracy = (accuracy_hits(logits, labels) * weights).sum() / denominator
    return loss, {f"{name}_loss": loss, f"{name}_accuracy": accuracy}


def apply_model(model, params: dict, batch: dict, rng: jax.Array | None, **kwargs):
    """The model on a batch's inputs, dropout on when `rng` is given."""
    deterministic = rng is None
    return model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        deterministic=deterministic,
        rngs=dropout_rngs(rng),
        **kwargs,
    )


def masked_lm_loss_fn(config: ml_collections.ConfigDict, model) -> LossFn:
    """MLM on the masked positions, plus NSP/SOP when `config.pair_objective` asks for it.

    BERT, ALBERT, RoBERTa (pair_objective 'none') and the knowledge-masking
    variants all train with this; they differ only in data and masking.
    With `model.sbo_head` (SpanBERT) the span-boundary cross-entropy on the
    same masked tokens is added (`sbo_loss`, `sbo_accuracy`), as the paper sums
    the two losses.
    """
    pair_objective = config.pair_objective
    sbo = config.model.sbo_head
    if sbo and config.masking.scheme != "span":
        raise ConfigError(
            f"model.sbo_head needs span boundaries from --config.masking.scheme=span, not {config.masking.scheme!r}"
        )
    span_args = ("span_left", "span_right", "span_offset") if sbo else ()

    def loss_fn(params, batch, rng, totals=None):
        totals = count_totals(batch) if totals is None else totals
        spans = {k: batch[k] for k in span_args}
        out = apply_model(model, params, batch, rng, masked_positions=batch["masked_positions"], **spans)
        loss, metrics = classification_terms(
            out.mlm_logits, batch["masked_ids"], batch["masked_weights"], totals["masked"], "mlm"
        )
        if sbo:
            sbo_loss, sbo_metrics = classification_terms(
                out.sbo_logits, batch["masked_ids"], batch["masked_weights"], totals["masked"], "sbo"
            )
            loss = loss + sbo_loss
            metrics.update(sbo_metrics)
        if pair_objective != "none":
            labels = batch["pair_labels"]
            pair_loss, pair_metrics = classification_terms(
                out.seq_relationship_logits, labels, jnp.ones(labels.shape, jnp.float32), totals["rows"], pair_objective
            )
            loss = loss + pair_loss
            metrics.update(pair_metrics)
        metrics["loss"] = loss
        return loss, metrics

    return loss_fn


def _electra_loss_fn(config: ml_collections.ConfigDict, model) -> LossFn:
    from bert_jax.objectives.electra import electra_loss_fn  # imports this module's helpers

    return electra_loss_fn(config, model)


LOSS_BUILDERS: dict[str, Callable[[ml_collections.ConfigDict, object], LossFn]] = {
    "mlm": masked_lm_loss_fn,
    "electra": _electra_loss_fn,  # generator MLM + 50 x replaced-token detection (objectives/electra.py)
}


def build_loss_fn(config: ml_collections.ConfigDict, model) -> LossFn:
    """The loss of `config.objective` for `model`."""
    try:
        builder = LOSS_BUILDERS[config.objective]
    except KeyError:
        raise ConfigError(f"unknown objective {config.objective!r}; use one of {sorted(LOSS_BUILDERS)}") from None
    return builder(config, model)
