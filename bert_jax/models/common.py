"""Small helpers every module uses: dtypes, initialisers with logical axis names, activations.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`,
`layers`) so that a rule table can map them to mesh axes without touching the
modules.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from bert_jax.models.bias import add_bias

_MESH = contextvars.ContextVar("bert_jax_activation_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: jax.sharding.Mesh, rules) -> Iterator[None]:
    """Within it, `constrain` pins activations to the layout `rules` give their logical names on `mesh`.

    The mesh is passed explicitly rather than set globally: a global mesh makes
    flax constrain boxed kernels inside DenseGeneral's reshaping initialiser,
    which fails for multi-axis kernels.
    """
    token = _MESH.set(mesh)
    try:
        with nn.logical_axis_rules(rules):
            yield
    finally:
        _MESH.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`x` laid out by its logical axis names under `activation_sharding`; unchanged outside it."""
    mesh = _MESH.get()
    return x if mesh is None else nn.with_logical_constraint(x, tuple(names), mesh=mesh)


def compute_dtype(cfg) -> jnp.dtype:
    """The dtype activations are computed in (`model.dtype`)."""
    return jnp.dtype(cfg.dtype)


KERNEL_INITS = {  # name -> initializer of stddev `initializer_range`
    # Google BERT's (TF truncated_normal_initializer): cut at 2 stddev, not rescaled, so the weights' std is 0.88x
    "truncated_normal": nn.initializers.truncated_normal,
    "normal": nn.initializers.normal,  # transformers' `_init_weights`
}


def kernel_init(cfg, names: Sequence[str | None], distribution: str = "truncated_normal") -> Callable:
    """BERT's init (std = initializer_range; `distribution` a key of KERNEL_INITS) with logical axis names."""
    return nn.with_logical_partitioning(KERNEL_INITS[distribution](cfg.initializer_range), tuple(names))


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


def _kept_dims(ndim: int, *used: Sequence[int]) -> list[int]:
    taken = {d for dims in used for d in dims}
    return [d for d in range(ndim) if d not in taken]


def _dot_transpose(g, x, y, dimension_numbers, swap_ans: bool = False):
    """Cotangent of `x` in `dot_general(x, y)` (jax's own transpose rule) with a float32 result.

    The dot runs on g's and y's dtype (bfloat16 in mixed precision), so the
    backward pass gets the same fast bf16 x bf16 -> f32 kernel as the forward.
    """
    (x_contract, y_contract), (x_batch, y_batch) = dimension_numbers
    x_kept = _kept_dims(x.ndim, x_contract, x_batch)
    y_kept = _kept_dims(y.ndim, y_contract, y_batch)
    first_y = len(x_batch) if swap_ans else len(x_batch) + len(x_kept)
    ans_y = tuple(range(first_y, first_y + len(y_kept)))
    dims = ((ans_y, tuple(y_kept)), (tuple(range(len(x_batch))), tuple(y_batch)))
    x_contract_by_y = [x_contract[i] for i in np.argsort(y_contract)]
    unsorted = list(x_batch) + x_kept + x_contract_by_y
    out = jax.lax.dot_general(g, y, dims, preferred_element_type=jnp.float32)
    return jax.lax.transpose(out, tuple(int(i) for i in np.argsort(unsorted))).astype(x.dtype)


# Names of the dots' outputs for remat policies (models/encoder.py): jax's `dots_saveable` looks for
# dot_general primitives and does not see the ones inside this module's custom VJP.
DOT_NO_BATCH = "bert_jax_dot_no_batch_dims"
DOT_BATCHED = "bert_jax_dot_batched"


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _mixed_dot(lhs, rhs, dimension_numbers, out_dtype):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, preferred_element_type=jnp.float32).astype(out_dtype)


def _mixed_dot_fwd(lhs, rhs, dimension_numbers, out_dtype):
    return _mixed_dot(lhs, rhs, dimension_numbers, out_dtype), (lhs, rhs)


def _mixed_dot_bwd(dimension_numbers, out_dtype, residuals, g):
    lhs, rhs = residuals
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    g = g.astype(lhs.dtype)
    swapped = ((rhs_contract, lhs_contract), (rhs_batch, lhs_batch))
    return _dot_transpose(g, lhs, rhs, dimension_numbers), _dot_transpose(g, rhs, lhs, swapped, swap_ans=True)


_mixed_dot.defvjp(_mixed_dot_fwd, _mixed_dot_bwd)


def mixed_precision_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **_):
    """dot_general for every matmul of the model: float32 accumulation, bf16 kernels forward and backward.

    XLA:CPU runs bfloat16 x bfloat16 -> float32 dots on the bfloat16 units but
    upcasts bfloat16 -> bfloat16 dots, and the float32 x bfloat16 dots jax's
    own transpose rule emits for the backward pass, to float32 first
    (bench/RESULTS.md). So the forward asks for a float32 result and the
    custom VJP casts the cotangent to the operands' dtype before its two dots,
    as autocast does. The result has `preferred_element_type` if given, else
    the operands' dtype. In float32 this is exactly `lax.dot_general`.
    """
    del precision
    dtype = jnp.result_type(lhs, rhs)
    out_dtype = jnp.dtype(preferred_element_type or dtype)
    lhs, rhs = lhs.astype(dtype), rhs.astype(dtype)
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = (
        tuple(tuple(int(d) for d in dims) for dims in pair) for pair in dimension_numbers
    )
    k = len(lhs_contract)
    if not lhs_batch and lhs_contract == trailing_of(lhs, k) and rhs_contract in (tuple(range(k)), trailing_of(rhs, k)):
        # a Dense-style contraction: run it as one 2-D matmul. XLA:CPU has no bf16 x bf16 -> f32 kernel for
        # dots contracting several dimensions (the weight gradient of a [batch, length, features] input).
        free_shape = lhs.shape[: lhs.ndim - k]
        rhs_leading = rhs_contract == tuple(range(k))
        out_shape = rhs.shape[k:] if rhs_leading else rhs.shape[: rhs.ndim - k]
        contracted = int(np.prod(lhs.shape[lhs.ndim - k :]))
        matrix = rhs.reshape((contracted, -1) if rhs_leading else (-1, contracted))
        dims = (((1,), (0,) if rhs_leading else (1,)), ((), ()))
        out = checkpoint_name(_mixed_dot(lhs.reshape(-1, contracted), matrix, dims, out_dtype), DOT_NO_BATCH)
        return out.reshape(free_shape + out_shape)
    dims = ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))
    return checkpoint_name(_mixed_dot(lhs, rhs, dims, out_dtype), DOT_BATCHED if lhs_batch else DOT_NO_BATCH)


def trailing_of(x: jax.Array, k: int) -> tuple[int, ...]:
    """The last `k` dimension indices of `x`."""
    return tuple(range(x.ndim - k, x.ndim))


class Dense(nn.Module):
    """A dense layer with nn.Dense's parameters, names and arithmetic, and `add_bias`'s backward pass.

    kernel [*inputs, features] contracts the last `contract` axes of the input
    (1: nn.Dense; more: nn.DenseGeneral over trailing axes, e.g. heads x head_dim),
    bias [features]; parameters float32, computed in `dtype` with float32
    accumulation (`mixed_precision_dot_general`). The bias is added through
    `add_bias`, whose gradient XLA:CPU computes many times faster than the
    transpose of nn.Dense's broadcast add (models/bias.py).
    """

    features: int
    dtype: jnp.dtype
    kernel_init: Callable
    bias_init: Callable
    contract: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = self.contract
        kernel = self.param("kernel", self.kernel_init, (*x.shape[x.ndim - n :], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = mixed_precision_dot_general(x, kernel, ((trailing_of(x, n), tuple(range(n))), ((), ())))
        return add_bias(y, bias)


def dense(cfg, features: int, names: tuple[str, ...], name: str, init: str = "truncated_normal") -> Dense:
    """A `Dense` in the compute dtype; `names` are the kernel's logical axes, the last also the bias's."""
    return Dense(
        features,
        dtype=compute_dtype(cfg),
        kernel_init=kernel_init(cfg, names, init),
        bias_init=zeros_init(names[-1:]),
        contract=len(names) - 1,
        name=name,
    )


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
    """BERT's exact gelu, x * Phi(x), written with erf as the reference implementations write it.

    `jax.nn.gelu(approximate=False)` computes the same function through erfc,
    which XLA:CPU lowers to an exp and several selects; erf is one clamped
    rational polynomial. Alone on a [2048, 1536] activation the erfc form's
    forward is 2-3.5x slower, and in a profile of all-MiniLM-L6-v2's
    fine-tuning step its fusions were the largest non-matmul ops; timed
    interleaved, the whole step is 1-8% faster with erf (bench/RESULTS_finetune.md,
    session 9). The two forms differ by at most 1e-6 on [-10, 10], as does
    either from torch's gelu.

    It is computed in float32 whatever x's dtype and rounded once, as torch's
    bfloat16 gelu is, and its gradient is the analytic Phi(x) + x phi(x) from
    x alone (a custom VJP). Differentiated op by op in bfloat16, the formula
    left every intermediate (x/2, erf, 1 + erf) as a bf16 array of the FFN's
    width saved for the backward pass, each its own XLA:CPU loop; BERT-small's
    bf16 train step spent ~10 ms per layer there (bench/RESULTS_training.md,
    session 15). In float32 the forward is exactly the erf formula.
    """
    xf = x.astype(jnp.float32)
    return (xf * _normal_cdf(xf)).astype(x.dtype)


def _normal_cdf(xf: jax.Array) -> jax.Array:
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, the factor gelu and its derivative share."""
    return 0.5 * (1.0 + jax.lax.erf(xf * _SQRT_HALF))


def _gelu_exact_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return gelu_exact(x), x


def _gelu_exact_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    xf = x.astype(jnp.float32)
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * xf * xf)
    return ((g.astype(jnp.float32) * (_normal_cdf(xf) + xf * pdf)).astype(x.dtype),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Maps `model.activation` to a function; gelu is exact as in BERT's checkpoints."""
    if name == "gelu":
        return gelu_exact
    if name == "gelu_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}; use 'gelu', 'gelu_tanh' or 'relu'")
