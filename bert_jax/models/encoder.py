"""The post-LN transformer layer of BERT and the layer stack.

The stack is one `nn.scan` over `TransformerLayer`: per-layer parameters get a
leading `layers` axis (BERT), ALBERT's shared parameters are broadcast to
every step. `scan_unroll` says how many layers one iteration of the scan's
loop runs: 1 keeps a loop (one layer compiled once: the short compile GPUs and
TPUs want), `num_layers` emits straight-line code over the same stacked
parameters, which XLA:CPU runs 6-23% faster (no zero-filled stacked residual
buffers, no dynamic slices; bench/RESULTS_training.md), so 0 (auto) picks the
whole stack on CPU and 1 elsewhere. `scan_layers=False` unrolls the same layer
in a Python loop with per-layer parameter names (`layers_0`, `layers_1`, ...
or one shared `layers`), which `stack_layer_params` / `unstack_layer_params`
convert to and from.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.attention import SelfAttention
from bert_jax.models.common import DOT_BATCHED, DOT_NO_BATCH, activation, constrain, dense, layer_norm
from bert_jax.models.dropout import Dropout

LAYERS = "layers"


class TransformerLayer(nn.Module):
    """Attention -> dropout -> add & LayerNorm -> FFN -> dropout -> add & LayerNorm."""

    config: object
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        dropout = Dropout(cfg.hidden_dropout_rate)
        attended = SelfAttention(cfg, self.deterministic, name="attention")(x, bias)
        x = layer_norm(cfg, "attention_layer_norm")(x + dropout(attended, deterministic=self.deterministic))
        h = activation(cfg.activation)(dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x))
        h = constrain(h, ("batch", "length", "mlp"))
        h = dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(h)
        x = layer_norm(cfg, "output_layer_norm")(x + dropout(h, deterministic=self.deterministic))
        return constrain(x, ("batch", "length", "embed")), None


def _remat_policy(name: str):
    """jax's policies, extended to the named outputs of `mixed_precision_dot_general` (a custom VJP they miss)."""
    cp = jax.checkpoint_policies
    policies = {
        "nothing_saveable": cp.nothing_saveable,
        "dots_saveable": cp.save_from_both_policies(
            cp.dots_saveable, cp.save_only_these_names(DOT_NO_BATCH, DOT_BATCHED)
        ),
        "dots_with_no_batch_dims_saveable": cp.save_from_both_policies(
            cp.dots_with_no_batch_dims_saveable, cp.save_only_these_names(DOT_NO_BATCH)
        ),
    }
    if name not in policies:
        raise ValueError(f"unknown remat_policy {name!r}; use 'none' or one of {sorted(policies)}")
    return policies[name]


def scan_unroll(cfg, platform: str | None = None) -> int:
    """Layers per loop iteration of the scanned stack: `cfg.scan_unroll`, with 0 (auto) resolved for `platform`
    (default: JAX's default backend) to the whole stack on CPU and 1 (a loop) on GPU and TPU."""
    unroll = int(cfg.get("scan_unroll", 1))
    if unroll < 0 or unroll > cfg.num_layers:
        raise ValueError(f"model.scan_unroll={unroll}: use 0 (auto), or 1 to num_layers ({cfg.num_layers})")
    if unroll == 0:
        unroll = cfg.num_layers if (platform or jax.default_backend()) == "cpu" else 1
    return unroll


class Encoder(nn.Module):
    """`num_layers` transformer layers, scanned or unrolled, shared or not."""

    config: object
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        cfg = self.config
        layer_cls = TransformerLayer
        unroll = scan_unroll(cfg) if cfg.scan_layers else cfg.num_layers
        if cfg.remat_policy != "none":
            # Only a rolled loop keeps XLA from merging the recomputation with the forward (jax.checkpoint's docs).
            layer_cls = nn.remat(layer_cls, policy=_remat_policy(cfg.remat_policy), prevent_cse=unroll > 1)
        if cfg.scan_layers:
            shared = cfg.share_layers
            stack = nn.scan(
                layer_cls,
                variable_axes={} if shared else {"params": 0},
                variable_broadcast="params" if shared else False,
                split_rngs={"params": not shared, "dropout": True},
                in_axes=nn.broadcast,
                length=cfg.num_layers,
                unroll=unroll,
                metadata_params={nn.PARTITION_NAME: LAYERS},
            )
            x, _ = stack(cfg, self.deterministic, name=LAYERS)(x, bias)
            return x
        if cfg.share_layers:
            layer = layer_cls(cfg, self.deterministic, name=LAYERS)
            for _ in range(cfg.num_layers):
                x, _ = layer(x, bias)
            return x
        for i in range(cfg.num_layers):
            x, _ = layer_cls(cfg, self.deterministic, name=f"{LAYERS}_{i}")(x, bias)
        return x


def unstack_layer_params(encoder_params: dict, num_layers: int) -> dict:
    """Scanned per-layer params (leading layer axis) -> `layers_0` ... `layers_{L-1}`."""
    stacked = encoder_params[LAYERS]
    return {f"{LAYERS}_{i}": jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(num_layers)}


def stack_layer_params(encoder_params: dict, num_layers: int) -> dict:
    """`layers_0` ... `layers_{L-1}` -> one tree with a leading layer axis, as nn.scan wants."""
    layers = [encoder_params[f"{LAYERS}_{i}"] for i in range(num_layers)]
    return {LAYERS: jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
