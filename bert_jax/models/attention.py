"""Multi-head self-attention and the attention-mask builder.

The mask builder takes a `kind` so that causal (UniLM left-to-right),
prefix/seq2seq (UniLM) and later permutation masks plug in without touching
the attention layer, which only ever sees an additive bias.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.bias import add_bias
from bert_jax.models.common import (
    compute_dtype,
    constrain,
    dense,
    kernel_init,
    mixed_precision_dot_general,
    zeros_init,
)
from bert_jax.models.dropout import Dropout

MASK_KINDS = ("padding", "causal", "prefix", "packed")


def attention_bias(
    attention_mask: jax.Array,
    kind: str = "padding",
    token_type_ids: jax.Array | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """An additive bias [batch, 1, q, k]: 0 where attending is allowed, dtype-min elsewhere.

    - padding: every token sees every non-padding token (BERT).
    - causal: token i sees tokens j <= i (left-to-right LM).
    - prefix: tokens of segment 0 see all of segment 0; tokens of segment 1
      also see segment 1 causally (UniLM seq2seq; needs token_type_ids).
    - packed: `attention_mask` holds each token's segment number (1, 2, ...;
      0 on padding) and a token sees only its own segment: several examples
      packed into one row (training/finetune_packing.py).
    """
    keep = attention_mask[:, None, None, :].astype(bool)
    length = attention_mask.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if kind == "padding":
        pass
    elif kind == "causal":
        keep = keep & causal
    elif kind == "packed":
        keep = keep & (attention_mask[:, None, :, None] == attention_mask[:, None, None, :])
    elif kind == "prefix":
        if token_type_ids is None:
            raise ValueError("the 'prefix' mask needs token_type_ids marking the source segment with 0")
        is_source_key = (token_type_ids == 0)[:, None, None, :]
        keep = keep & (is_source_key | causal)
    else:
        raise ValueError(f"unknown attention mask kind {kind!r}; use one of {MASK_KINDS}")
    return jnp.where(keep, 0.0, jnp.finfo(dtype).min).astype(dtype)


QKV = ("query", "key", "value")


class ProjectionParams(nn.Module):
    """The kernel [hidden, *features] and bias [*features] of one projection, named as nn.DenseGeneral names them."""

    config: object
    features: tuple[int, ...]

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        kernel = self.param(
            "kernel", kernel_init(cfg, ("embed", "heads", "kv")), (cfg.hidden_size, *self.features), jnp.float32
        )
        return kernel, self.param("bias", zeros_init(("heads", "kv")), self.features, jnp.float32)


class SelfAttention(nn.Module):
    """Scaled dot-product attention over `num_heads` heads with an additive bias."""

    config: object
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        cfg = self.config
        q, k, v = self.project_qkv(x)
        context = self.attend(q, k, v, bias)
        return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output")(context)

    def project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q, k, v [batch, length, heads, head_dim] from one matmul against the three kernels side by side.

        The parameters stay three DenseGeneral-shaped sets (`query`, `key`,
        `value`: kernel [hidden, heads, head_dim], bias [heads, head_dim]) as
        in the checkpoints and the sharding rules; stacking them per call
        copies 3 H^2 weights. One [tokens, H] x [H, 3H] dot is what fused-QKV
        encoders run on accelerators; on XLA:CPU it measured within noise of
        three H x H dots (bench/train_step.py variants, RESULTS_training.md).
        q, k and v come out of one `lax.split`, whose gradient is a concatenation;
        indexed out one by one, their gradients were three zero-padded arrays
        summed, which XLA:CPU ran as a 10 ms loop per layer of BERT-small's
        bf16 train step (RESULTS_training.md, session 15).
        """
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_heads
        kernels, biases = zip(*(ProjectionParams(cfg, (cfg.num_heads, head_dim), name=n)() for n in QKV))
        kernel = jnp.stack(kernels, axis=1)  # [hidden, 3, heads, head_dim]
        dtype = compute_dtype(cfg)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        fused = mixed_precision_dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
        fused = add_bias(fused, jnp.stack(biases))  # [batch, length, 3, heads, head_dim]
        names = ("batch", "length", "heads", "kv")
        parts = jax.lax.split(fused, (1,) * len(QKV), axis=fused.ndim - 3)
        return tuple(constrain(part.squeeze(fused.ndim - 3), names) for part in parts)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
        """softmax(q k^T / sqrt(d) + bias) v on [batch, length, heads, head_dim] (with attention dropout).

        Computed heads-first ([batch, heads, length, head_dim]): XLA:CPU's fast
        batched matmul wants the batch dimensions leading. A separate method so
        that other attention kernels can replace only this part.
        """
        dtype = q.dtype
        heads_first = lambda t: t.transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = heads_first(q), heads_first(k), heads_first(v)
        q = q / jnp.sqrt(q.shape[-1]).astype(dtype)
        scores = (
            jnp.einsum(
                "bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32, _dot_general=mixed_precision_dot_general
            )
            + bias
        )
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        probs = Dropout(self.config.attention_dropout_rate)(probs, deterministic=self.deterministic)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs, v, _dot_general=mixed_precision_dot_general)
        return heads_first(context)
