"""The train and eval steps around an objective's loss function.

One step = one optimizer update on the global batch; with
`grad_accum_steps > 1` the batch is split into micro-batches whose gradients
are summed in a `lax.scan`, so memory scales with the micro-batch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from bert_jax.objectives.losses import LossFn, count_totals
from bert_jax.training import partitioning


@flax.struct.dataclass
class TrainState:
    """Everything a step changes; checkpointed as one tree."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule, accum_steps: int, totals_fn=count_totals
):
    """A pure function (state, batch) -> (state, metrics) to be jitted with shardings.

    `loss_fn(params, batch, rng, totals)` is the objective's (objectives/losses.py).
    `totals_fn(batch)` gives the global-batch denominators handed to every
    micro-batch's loss under accumulation (pretraining's `count_totals`;
    fine-tuning passes its task's).
    """

    def grads_of(params, batch, rng, totals=None):
        return jax.grad(lambda p: loss_fn(p, batch, rng, totals), has_aux=True)(params)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng, dropout_rng = jax.random.split(state.rng)
        if accum_steps == 1:
            grads, metrics = grads_of(state.params, batch, dropout_rng)
        else:
            totals = totals_fn(batch)
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


def make_eval_step(loss_fn: LossFn):
    """(params, batch) -> metrics, dropout off."""

    def step(params, batch: dict) -> dict:
        return loss_fn(params, batch, None, None)[1]

    return step


def state_shardings(boxed_params_fn, optimizer: optax.GradientTransformation, mesh, rules) -> TrainState:
    """The NamedSharding of every leaf of a TrainState, allocating nothing.

    `boxed_params_fn(rng)` returns the model's parameters boxed with their
    logical axis names (`model.init(...)["params"]`); the optimizer's moments
    follow their parameters (training/partitioning.py).
    """
    rng = jax.random.PRNGKey(0)
    boxed = jax.eval_shape(boxed_params_fn, rng)
    params = nn.meta.unbox(boxed)
    abstract = TrainState(
        jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(optimizer.init, params), jax.eval_shape(lambda: rng)
    )
    return partitioning.state_shardings(abstract, boxed, mesh, rules)
