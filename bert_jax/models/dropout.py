"""Inverted dropout drawn from 16 random bits per element.

`flax.linen.Dropout` draws a 32-bit word per element (threefry), and on
XLA:CPU generating those words took 9-11% of a MiniLM fine-tuning step and
4-6% of a pretraining step (bench/RESULTS_training.md). Splitting each word
into two 16-bit draws halves that work. The drop probability becomes
round(rate * 65536) / 65536 (0.1 -> 0.1000061) and the kept values are scaled
by the inverse of the exact keep probability, so the layer stays unbiased.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

LEVELS = 1 << 16  # values of one 16-bit draw


class Dropout(nn.Module):
    """Drop-in for `nn.Dropout(rate)(x, deterministic=...)`, with the same 'dropout' rng collection."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        threshold = round(self.rate * LEVELS)  # a draw below it drops the element
        if deterministic or threshold == 0:
            return x
        if threshold >= LEVELS:
            return jnp.zeros_like(x)
        *lead, last = x.shape
        words = jax.random.bits(self.make_rng("dropout"), (*lead, (last + 1) // 2), jnp.uint32)
        draws = jnp.concatenate([words & 0xFFFF, words >> 16], axis=-1)[..., :last]
        keep_prob = 1.0 - threshold / LEVELS
        return jnp.where(draws >= threshold, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))
