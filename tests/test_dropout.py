"""The hashed dropout: rate, unbiasedness, independence between elements, steps and sites, row stability,
no loops in the compiled program, key kinds, dtypes, edges."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models.dropout import LEVELS, Dropout, dropout_rngs, hashed_draws, index_words


def apply(rate: float, x: jax.Array, deterministic: bool = False, seed: int = 0) -> np.ndarray:
    layer = Dropout(rate)
    return np.asarray(layer.apply({}, x, deterministic, rngs=dropout_rngs(jax.random.key(seed))))


@pytest.mark.parametrize("shape", [(64, 384), (8, 12, 31, 31)])
def test_drops_at_the_rate_and_keeps_the_mean(shape):
    x = jnp.ones(shape, jnp.float32)
    out = apply(0.1, x)
    n = out.size
    dropped = (out == 0).mean()
    sigma = np.sqrt(0.1 * 0.9 / n)
    assert abs(dropped - 0.1) < 5 * sigma, dropped
    kept = out[out != 0]
    np.testing.assert_allclose(kept, 1 / (1 - round(0.1 * LEVELS) / LEVELS), rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5 * sigma / 0.9


def test_draws_are_uniform_and_neighbours_independent():
    """The draws' 16 high and 16 low bits are uniform, and a drop at one element says nothing of the next one
    along any axis (the index is hashed, not used as a counter a weak mixer would leave visible)."""
    draws = np.asarray(hashed_draws(dropout_rngs(jax.random.key(3))["dropout"], (64, 64, 64)))
    for part in (draws >> 16, draws & 0xFFFF):
        counts = np.bincount((part >> 12).ravel(), minlength=16)  # 16 buckets of equal width
        expected = draws.size / 16
        assert ((counts - expected) ** 2 / expected).sum() < 45, counts  # chi-square, 15 dof: p < 1e-4
    drop = draws < LEVELS // 2
    for axis in range(3):
        a, b = np.moveaxis(drop, axis, 0)[:-1], np.moveaxis(drop, axis, 0)[1:]
        assert abs((a & b).mean() - 0.25) < 0.005, axis


def test_masks_differ_by_rng_step_and_site_and_repeat_with_them():
    x = jnp.ones((16, 128))
    assert (apply(0.1, x, seed=1) == apply(0.1, x, seed=1)).all()
    assert (apply(0.5, x, seed=1) != apply(0.5, x, seed=2)).mean() > 0.4

    class TwoSites(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Dropout(0.5)(x, False), Dropout(0.5)(x, False)

    a, b = TwoSites().apply({}, x, rngs=dropout_rngs(jax.random.key(0)))
    assert 0.4 < (np.asarray(a) != np.asarray(b)).mean() < 0.6  # independent sites: differ at half the places
    steps = [apply(0.5, x, seed=0)]  # a step's rng is fold_in(key, step) or a split of the previous one
    for rng in (jax.random.fold_in(jax.random.key(0), 7), jax.random.split(jax.random.key(0))[0]):
        steps.append(np.asarray(Dropout(0.5).apply({}, x, False, rngs=dropout_rngs(rng))))
    assert all(0.4 < ((steps[i] == 0) != (steps[j] == 0)).mean() < 0.6 for i, j in ((0, 1), (0, 2), (1, 2)))


def test_appending_rows_keeps_the_other_rows_masks():
    """Packed fine-tuning runs a batch in a larger row count while its own shape compiles (finetune_packing)."""
    small, large = jnp.ones((5, 7, 33)), jnp.ones((8, 7, 33))
    np.testing.assert_array_equal(apply(0.3, small, seed=4), apply(0.3, large, seed=4)[:5])


def test_index_words_number_every_element_once_and_split_past_32_bits():
    (word,) = index_words((3, 5, 7))
    np.testing.assert_array_equal(np.asarray(word).ravel(), np.arange(105))
    shapes = [np.asarray(w).shape for w in index_words((2, 3))]
    assert shapes == [(2, 3)]
    big = jax.eval_shape(lambda: index_words((4, 1 << 16, 1 << 17)))  # 2**35 elements: two words
    assert len(big) == 2


def test_the_compiled_mask_has_no_loop():
    """The reason for the hash: threefry lowers to while loops on XLA:CPU, each compiled on its own."""

    def f(x, rng):
        return Dropout(0.1).apply({}, x, False, rngs=dropout_rngs(rng))

    hlo = jax.jit(f).lower(jnp.ones((4, 32)), jax.random.key(0)).compile().as_text()
    assert " while(" not in hlo


def test_key_kinds_deterministic_zero_and_full_rate_and_dtype():
    x = jax.random.normal(jax.random.key(0), (4, 10), jnp.bfloat16)
    assert (apply(0.1, x, deterministic=True) == np.asarray(x)).all()
    assert (apply(0.0, x) == np.asarray(x)).all()
    assert (apply(1.0, x) == 0).all()
    assert apply(0.1, x).dtype == jnp.bfloat16
    assert dropout_rngs(None) is None
    for rng in (jax.random.PRNGKey(0), jax.random.key(0, impl="rbg"), jax.random.key(0)):  # raw, 4-word, typed
        out = Dropout(0.5).apply({}, jnp.ones((8, 8)), False, rngs=dropout_rngs(rng))
        assert 0 < (np.asarray(out) == 0).mean() < 1
