"""The 16-bit dropout: the drop rate, unbiasedness, independence of the two halves of a word, dtypes, edges."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models.dropout import LEVELS, Dropout


def apply(rate: float, x: jax.Array, deterministic: bool = False, seed: int = 0) -> np.ndarray:
    layer = Dropout(rate)
    return np.asarray(layer.apply({}, x, deterministic, rngs={"dropout": jax.random.key(seed)}))


@pytest.mark.parametrize("shape", [(64, 384), (8, 12, 31, 31)])  # an odd last dimension uses half a word
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


def test_both_halves_of_a_word_drop_independently():
    """Columns j and j + last/2 come from the low and high 16 bits of the same random word."""
    out = apply(0.5, jnp.ones((4096, 64)))
    low, high = (out[:, :32] == 0), (out[:, 32:] == 0)
    assert abs(low.mean() - 0.5) < 0.01 and abs(high.mean() - 0.5) < 0.01
    both = (low & high).mean()
    assert abs(both - 0.25) < 0.01, both  # independent: P(both) = P(low) P(high)


def test_masks_differ_by_rng_and_repeat_with_it():
    x = jnp.ones((16, 128))
    assert (apply(0.1, x, seed=1) == apply(0.1, x, seed=1)).all()
    assert (apply(0.1, x, seed=1) != apply(0.1, x, seed=2)).any()


def test_deterministic_zero_and_full_rate_and_dtype():
    x = jax.random.normal(jax.random.key(0), (4, 10), jnp.bfloat16)
    assert (apply(0.1, x, deterministic=True) == np.asarray(x)).all()
    assert (apply(0.0, x) == np.asarray(x)).all()
    assert (apply(1.0, x) == 0).all()
    assert Dropout(0.1).apply({}, x, False, rngs={"dropout": jax.random.key(0)}).dtype == jnp.bfloat16
