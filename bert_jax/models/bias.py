"""Adding a learned bias, with a backward pass that XLA:CPU runs fast.

The bias gradient is the cotangent summed over every token. Written as
`y + bias`, jax's transpose of the broadcast is a `reduce_sum` in the
activations' dtype, and XLA:CPU compiles both kinds badly:

- a bfloat16 reduction is rewritten into float32 windows of 32 elements
  (`reduce-window`), 10-25x slower than the same sum of a float32 copy
  ([2048, 2048]: 12.3 vs 0.5 ms); in BERT-small's bfloat16 train step these
  windows were ~20% of the op time;
- a float32 sum over the rows of a vocabulary-wide matrix (the MLM decoder's
  bias, [320, 30522]) runs at ~1 GB/s: 35 ms, against 0.8 ms as a
  matrix-vector product, and 13% of bert_tiny's float32 step.

`add_bias` keeps the forward `y + bias` exactly as before and returns the
gradient summed in float32: a bf16 cotangent of ordinary width upcast and
reduced (one fused pass), a float32 or vocabulary-wide one as ones @ g on
the matmul library the rest of the model uses (bench/RESULTS_training.md,
section 10).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """`y + bias` (bias over the trailing `bias.ndim` axes of `y`, cast to y's dtype)."""
    return y + bias.astype(y.dtype)


def _add_bias_fwd(y: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
    return add_bias(y, bias), bias


def _add_bias_bwd(bias: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    return g, bias_gradient(g, bias.shape).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


WIDE_ROW = 8192  # features from which even a float32 copy's reduction is slow on XLA:CPU (vocabulary-sized)


def bias_gradient(g: jax.Array, bias_shape: tuple[int, ...]) -> jax.Array:
    """`g` summed over its leading axes down to `bias_shape`, in float32.

    A float32 `g`, or a vocabulary-wide one, is summed as ones @ g; a
    narrower-dtype one of ordinary width is upcast and reduced, which XLA
    fuses into one pass and which measured 2-3x faster than the product there.
    """
    features = math.prod(bias_shape)
    rows = g.reshape(-1, features).astype(jnp.float32)
    if g.dtype == jnp.float32 or features >= WIDE_ROW:
        ones = jnp.ones((rows.shape[0],), jnp.float32)
        total = jax.lax.dot_general(ones, rows, (((0,), (0,)), ((), ())))
    else:
        total = jnp.sum(rows, axis=0)
    return total.reshape(bias_shape)
