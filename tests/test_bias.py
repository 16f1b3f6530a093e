"""`add_bias`: the forward and gradients of `y + bias`, and a backward XLA:CPU does not turn into reduce-windows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models.bias import WIDE_ROW, add_bias
from bert_jax.models.common import Dense

CASES = {  # activation shape, bias shape: a Dense output, the fused Q/K/V bias, a vocabulary-wide MLM bias
    "dense": ((3, 5, 8), (8,)),
    "qkv": ((2, 5, 3, 4, 6), (3, 4, 6)),
    "wide": ((4, 3, WIDE_ROW + 7), (WIDE_ROW + 7,)),
}


def _plain(y, bias):
    return y + bias.astype(y.dtype)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_values_and_gradients_equal_the_broadcast_add(case, dtype):
    y_shape, b_shape = CASES[case]
    ky, kb, kw = jax.random.split(jax.random.PRNGKey(0), 3)
    y = jax.random.normal(ky, y_shape).astype(dtype)
    bias = jax.random.normal(kb, b_shape)  # float32, like every parameter
    weights = jax.random.normal(kw, y_shape)  # a loss that weights every element differently

    def loss(add):
        return lambda a, b: jnp.sum(jnp.sin(add(a, b).astype(jnp.float32)) * weights)

    out = add_bias(y, bias)
    assert out.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(_plain(y, bias), np.float32))
    ours = jax.grad(loss(add_bias), argnums=(0, 1))(y, bias)
    ref = jax.grad(loss(_plain), argnums=(0, 1))(y, bias)
    assert ours[1].dtype == jnp.float32 and ours[1].shape == b_shape
    np.testing.assert_array_equal(np.asarray(ours[0], np.float32), np.asarray(ref[0], np.float32))
    # the reference sums in the cotangent's dtype; ours in float32 (so it is the more exact of the two in bf16)
    exact = np.asarray(ref[0], np.float64).reshape(-1, int(np.prod(b_shape))).sum(0).reshape(b_shape)
    np.testing.assert_allclose(np.asarray(ours[1]), exact, rtol=1e-5, atol=1e-4)
    tolerance = 1e-4 if dtype == "float32" else 0.05 * np.abs(exact).max()
    np.testing.assert_allclose(np.asarray(ours[1]), np.asarray(ref[1]), atol=tolerance)


def test_bfloat16_bias_gradient_compiles_without_reduce_windows():
    """The point of the custom VJP: jax's bf16 reduce_sum becomes XLA:CPU reduce-windows, 10-25x slower."""
    y = jnp.ones((16, 128, 256), jnp.bfloat16)
    bias = jnp.zeros((256,), jnp.float32)

    def hlo(add):
        grad = jax.jit(jax.grad(lambda b: jnp.sum(add(y, b).astype(jnp.float32) ** 2)))
        return grad.lower(bias).compile().as_text()

    if jax.default_backend() == "cpu":
        assert "reduce-window" in hlo(_plain)  # the pattern this guards against is still what XLA:CPU does
    assert "reduce-window" not in hlo(add_bias)


def test_dense_has_nn_dense_parameters_and_outputs():
    """`Dense` is nn.Dense (and nn.DenseGeneral over trailing axes) in names, shapes, init and arithmetic."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4, 5))
    init = nn.initializers.normal(0.02)
    bias_init = nn.initializers.normal(0.5)  # nonzero, so the bias is really added
    for contract, ref in (
        (1, nn.Dense(7, kernel_init=init, bias_init=bias_init)),
        (2, nn.DenseGeneral(7, axis=(-2, -1), kernel_init=init, bias_init=bias_init)),
    ):
        ours = Dense(7, dtype=jnp.float32, kernel_init=init, bias_init=bias_init, contract=contract)
        params = ours.init(jax.random.PRNGKey(2), x)
        ref_params = ref.init(jax.random.PRNGKey(2), x)
        assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
        np.testing.assert_array_equal(params["params"]["kernel"], ref_params["params"]["kernel"])
        np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-6)
