"""Inverted dropout whose mask is a keyed integer hash of each element's index.

Why not `jax.random.bits` per site (flax.linen.Dropout, and this module up
to session 12): every call is its own threefry computation, and JAX lowers
threefry on XLA:CPU as rolled while loops. A 6-layer fine-tuning step has 20
dropout sites, each with two such calls (flax's `make_rng` fold-in and the
bits): 39 loops that took about half of a MiniLM train step's compile
(10.6 s against 5.5 s without them; bench/RESULTS_finetune.md, session 13),
and the bits went through a buffer of their own before the mask was applied.

Here the mask is computed where it is applied: two rounds of an integer
mixer (Wellons' lowbias32) over the element's row-major index, keyed by two
words of the site's 'dropout' rng. That is straight-line elementwise code
that XLA fuses into the multiply, with no loop and no extra buffer. flax
still derives one rng per module, per call and per scanned layer; with the
key made by `dropout_rngs` (JAX's `unsafe_rbg` implementation) those
derivations are XLA's RngBitGenerator instead of threefry loops too.

What it keeps from JAX's partitionable threefry:
- The mask does not depend on the sharding: the index comes from iota over
  the global shape, which the SPMD partitioner offsets per shard.
- Appending rows leaves the others' masks unchanged (packed fine-tuning
  batches rely on it, finetune_packing.py): an element's draw depends only
  on its row-major index and the key, while the array has fewer than 2**32
  elements. Larger arrays (attention probabilities of a pod-sized batch)
  number their elements in several 32-bit words, each element still distinct.

What it gives up: an `unsafe_rbg` key's derivations follow XLA's
RngBitGenerator, whose algorithm is the backend's own, so the same seed
gives other masks on CPU, GPU and TPU (exact resume stays exact on one
backend). A draw is 32 bits: the drop probability is round(rate * 2**32) /
2**32, and kept values are scaled by the inverse of that keep probability.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

LEVELS = 1 << 32  # values of one draw, and elements one uint32 index word can number
RNG_IMPL = "unsafe_rbg"  # the key implementation `dropout_rngs` hands to flax
_WIDEN = (0x9E3779B9, 0x85EBCA6B)  # constants that turn a 2-word key into the 4 words an rbg key has


def mix32(x: jax.Array) -> jax.Array:
    """Wellons' lowbias32 integer mixer: a bijection on uint32 whose output bits each depend on every input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def dropout_rngs(rng: jax.Array | None) -> dict[str, jax.Array] | None:
    """The `rngs` argument of a training-mode `model.apply`: {'dropout': `rng` as an `unsafe_rbg` key}.

    `rng` is any JAX key (typed or a raw uint32 one, threefry or rbg); None
    (evaluation) stays None. Its bits carry over, so one step's rng still
    decides its masks, and the objective keeps `rng` itself for anything
    else it samples (ELECTRA's generator).
    """
    if rng is None:
        return None
    data = jax.random.key_data(rng).reshape(-1).astype(jnp.uint32)
    if data.shape[0] == 2:
        data = jnp.concatenate([data, mix32(data ^ jnp.asarray(_WIDEN, jnp.uint32))])
    return {"dropout": jax.random.wrap_key_data(data[:4], impl=RNG_IMPL)}


def index_words(shape: tuple[int, ...]) -> list[jax.Array]:
    """The row-major index of every element of `shape` as uint32 words, trailing dimensions first: one word
    below 2**32 elements (then growing the leading dimension keeps every other element's index), more above."""
    groups: list[list[int]] = [[]]
    size = 1
    for d in reversed(range(len(shape))):
        if groups[-1] and size * shape[d] > LEVELS:
            groups.append([])
            size = 1
        groups[-1].append(d)
        size *= shape[d]
    words = []
    for dims in groups:
        word, stride = jnp.zeros(shape, jnp.uint32), 1
        for d in dims:  # innermost first
            word = word + jax.lax.broadcasted_iota(jnp.uint32, shape, d) * jnp.uint32(stride)
            stride *= shape[d]
        words.append(word)
    return words


def hashed_draws(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A uint32 draw per element of `shape`: the element's index words mixed with two words of `key`."""
    k = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    words = index_words(shape)
    h = mix32(words[0] ^ k[0])
    for word in words[1:]:
        h = mix32(h ^ word)
    return mix32(h ^ k[1])


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
        draws = hashed_draws(self.make_rng("dropout"), x.shape)
        keep_prob = 1.0 - threshold / LEVELS
        return jnp.where(draws >= jnp.uint32(threshold), x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))
