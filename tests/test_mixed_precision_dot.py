"""The custom-VJP dot every matmul uses: same gradients as jax's own rule, bf16 kernels both ways."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models.common import mixed_precision_dot_general

CASES = {  # dimension numbers of each kind of dot the model has, with operand shapes
    "dense": ((((2,), (0,)), ((), ())), (3, 4, 6), (6, 5)),
    "dense_general_out_heads": ((((2,), (0,)), ((), ())), (3, 4, 6), (6, 2, 3)),
    "dense_general_in_heads": ((((2, 3), (0, 1)), ((), ())), (3, 4, 2, 3), (2, 3, 6)),
    "attention_scores": ((((3,), (3,)), ((0, 1), (0, 1))), (2, 3, 5, 4), (2, 3, 7, 4)),
    "attention_context": ((((3,), (2,)), ((0, 1), (0, 1))), (2, 3, 5, 7), (2, 3, 7, 4)),
    "tied_decoder": ((((1,), (1,)), ((), ())), (5, 6), (9, 6)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_gradients_equal_jax_dot_general(case):
    dims, x_shape, y_shape = CASES[case]
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x, y = jax.random.normal(kx, x_shape), jax.random.normal(ky, y_shape)

    def loss(dot):
        return lambda a, b: jnp.sum(jnp.sin(dot(a, b, dims)))

    ours = jax.grad(loss(mixed_precision_dot_general), (0, 1))(x, y)
    reference = jax.grad(loss(jax.lax.dot_general), (0, 1))(x, y)
    for got, want in zip(ours, reference, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def test_bfloat16_forward_and_backward_run_bf16_dots_with_float32_results():
    dims, x_shape, y_shape = CASES["dense"]
    x = jnp.ones(x_shape, jnp.bfloat16)
    w = jnp.ones(y_shape, jnp.float32)

    def loss(a, kernel):
        return jnp.sum(mixed_precision_dot_general(a, kernel.astype(jnp.bfloat16), dims).astype(jnp.float32))

    hlo = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(x, w).as_text()
    dots = [line for line in hlo.splitlines() if "stablehlo.dot_general" in line]
    assert len(dots) == 3  # forward, d/dx, d/dw
    for line in dots:  # operands bf16, result f32: the fast XLA:CPU kernel
        assert "(tensor<" in line and "bf16>, tensor<" in line and "-> tensor<" in line, line
        assert line.rstrip().endswith("xf32>"), line
    gx, gw = jax.grad(loss, (0, 1))(x, w)
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(gw, np.float32), np.full(y_shape, 12.0))


def test_preferred_element_type_sets_the_result_dtype():
    dims, x_shape, y_shape = CASES["attention_scores"]
    q = jnp.ones(x_shape, jnp.bfloat16)
    k = jnp.ones(y_shape, jnp.bfloat16)
    assert mixed_precision_dot_general(q, k, dims).dtype == jnp.bfloat16
    assert mixed_precision_dot_general(q, k, dims, preferred_element_type=jnp.float32).dtype == jnp.float32


@pytest.mark.parametrize("case", sorted(CASES))
def test_bfloat16_gradients_run_and_track_float32(case):
    """Every contraction the model has compiles and runs in bf16 (XLA:CPU lacks some bf16 -> f32 dot kernels)."""
    dims, x_shape, y_shape = CASES[case]
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x, y = jax.random.normal(kx, x_shape), jax.random.normal(ky, y_shape)

    def loss(a, b):
        out = mixed_precision_dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), dims)
        return jnp.sum(jnp.sin(out.astype(jnp.float32)))

    ours = jax.jit(jax.grad(loss, (0, 1)))(x, y)
    reference = jax.grad(lambda a, b: jnp.sum(jnp.sin(jax.lax.dot_general(a, b, dims))), (0, 1))(x, y)
    for got, want in zip(ours, reference, strict=True):
        np.testing.assert_allclose(got, want, atol=0.1 * float(jnp.abs(want).max()) + 0.05)
