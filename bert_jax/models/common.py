"""Small helpers every module uses: dtypes, initialisers with logical axis names, activations.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`,
`layers`) so that a rule table can map them to mesh axes without touching the
modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def compute_dtype(cfg) -> jnp.dtype:
    """The dtype activations are computed in (`model.dtype`)."""
    return jnp.dtype(cfg.dtype)


def kernel_init(cfg, names: Sequence[str | None]) -> Callable:
    """Truncated-normal init of BERT (std = initializer_range) with logical axis names."""
    return nn.with_logical_partitioning(nn.initializers.truncated_normal(cfg.initializer_range), tuple(names))


def zeros_init(names: Sequence[str | None]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), tuple(names))


def ones_init(names: Sequence[str | None]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.ones_init(), tuple(names))


def layer_norm(cfg, name: str, axis_name: str = "embed") -> nn.LayerNorm:
    """LayerNorm with statistics in float32 whatever the compute dtype."""
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=compute_dtype(cfg),
        param_dtype=jnp.float32,
        scale_init=ones_init((axis_name,)),
        bias_init=zeros_init((axis_name,)),
        name=name,
    )


def f32_accumulating_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """dot_general that accumulates (and returns) float32, cast back to the operands' dtype.

    XLA:CPU runs bfloat16 x bfloat16 -> float32 dots on the bfloat16 units but
    upcasts bfloat16 -> bfloat16 dots to float32 first (bench/RESULTS.md: about
    2x); float32 accumulation is also what mixed precision wants everywhere.
    """
    out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=jnp.float32)
    return out.astype(jnp.result_type(lhs, rhs))


def dense(cfg, features: int, names: tuple[str, str], name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=compute_dtype(cfg),
        param_dtype=jnp.float32,
        kernel_init=kernel_init(cfg, names),
        bias_init=zeros_init(names[1:]),
        dot_general=f32_accumulating_dot_general,
        name=name,
    )


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Maps `model.activation` to a function; gelu is exact as in BERT's checkpoints."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}; use 'gelu', 'gelu_tanh' or 'relu'")
