"""The pretraining losses and the jitted train and eval steps.

One step = one optimizer update on the global batch; with
`grad_accum_steps > 1` the batch is split into micro-batches whose gradients
are summed in a `lax.scan`, so memory scales with the micro-batch.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a step changes; checkpointed as one tree."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def pretraining_losses(
    model, params, batch: dict, rng: jax.Array | None, pair_objective: str, totals: tuple | None = None
) -> tuple[jax.Array, dict]:
    """MLM loss on the masked positions (+ NSP/SOP loss), with the accuracies as metrics.

    Means are sums divided by `totals` = (masked positions, sequences) of the
    whole global batch, so that summing the values of micro-batches gives
    exactly the full batch's loss and gradient.
    """
    deterministic = rng is None
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        masked_positions=batch["masked_positions"],
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": rng},
    )
    weights = batch["masked_weights"]
    n_masked, n_rows = totals if totals is not None else (weights.sum(), weights.shape[0])
    n_masked = jnp.maximum(n_masked, 1.0)
    logits = out.mlm_logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["masked_ids"])
    mlm_loss = (ce * weights).sum() / n_masked
    metrics = {
        "mlm_loss": mlm_loss,
        "mlm_accuracy": ((logits.argmax(-1) == batch["masked_ids"]) * weights).sum() / n_masked,
    }
    loss = mlm_loss
    if pair_objective != "none":
        pair_logits = out.seq_relationship_logits.astype(jnp.float32)
        pair_ce = optax.softmax_cross_entropy_with_integer_labels(pair_logits, batch["pair_labels"])
        pair_loss = pair_ce.sum() / n_rows
        metrics[f"{pair_objective}_loss"] = pair_loss
        metrics[f"{pair_objective}_accuracy"] = (pair_logits.argmax(-1) == batch["pair_labels"]).sum() / n_rows
        loss = loss + pair_loss
    metrics["loss"] = loss
    return loss, metrics


def make_train_step(model, optimizer: optax.GradientTransformation, schedule, pair_objective: str, accum_steps: int):
    """A pure function (state, batch) -> (state, metrics) to be jitted with shardings."""

    def grads_of(params, batch, rng, totals=None):
        loss = lambda p: pretraining_losses(model, p, batch, rng, pair_objective, totals)
        return jax.grad(loss, has_aux=True)(params)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng, dropout_rng = jax.random.split(state.rng)
        if accum_steps == 1:
            grads, metrics = grads_of(state.params, batch, dropout_rng)
        else:
            totals = (batch["masked_weights"].sum(), batch["masked_weights"].shape[0])
            micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)
            rngs = jax.random.split(dropout_rng, accum_steps)

            def body(carry, xs):
                g_m = grads_of(state.params, *xs, totals)
                return jax.tree.map(jnp.add, carry, g_m), None

            first = jax.tree.map(lambda x: x[0], micro)
            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grads_of, state.params, first, rngs[0], totals))
            (grads, metrics), _ = jax.lax.scan(body, zeros, (micro, rngs))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
        return TrainState(state.step + 1, params, opt_state, rng), metrics

    return step


def make_eval_step(model, pair_objective: str):
    def step(params, batch: dict) -> dict:
        return pretraining_losses(model, params, batch, None, pair_objective)[1]

    return step
