"""optax optimizers of the papers: AdamW (BERT) and LAMB (ALBERT), with their schedules.

Weight decay is masked off LayerNorm parameters and biases, gradients are
clipped by global norm. Gradient accumulation lives in the train step (one
optimizer update per global batch, whatever the number of micro-batches).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from bert_jax.errors import ConfigError


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then linear or polynomial decay to 0 at `total_steps`."""
    warmup = min(config.warmup_steps, max(config.total_steps - 1, 0))
    decay_steps = max(config.total_steps - warmup, 1)
    if config.schedule == "linear":
        power = 1.0
    elif config.schedule == "polynomial":
        power = config.schedule_power
    else:
        raise ConfigError(f"unknown schedule {config.schedule!r}; use 'linear' or 'polynomial'")
    decay = optax.polynomial_schedule(config.learning_rate, 0.0, power, decay_steps)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), decay], [warmup])


def decay_mask(params) -> dict:
    """True for parameters that get weight decay: kernels and embeddings, not LayerNorm or biases."""
    flat = flatten_dict(params)
    return unflatten_dict({k: not (k[-1] in ("bias", "scale") or "layer_norm" in k[-2]) for k in flat})


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimizer named by `config.optimizer` with the schedule, decay mask and clipping."""
    schedule = learning_rate_schedule(config)
    moments = dict(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
    if config.optimizer == "adamw":
        opt = optax.adamw(schedule, **moments, weight_decay=config.weight_decay, mask=decay_mask)
    elif config.optimizer == "lamb":
        opt = optax.lamb(schedule, **moments, weight_decay=config.weight_decay, mask=decay_mask)
    else:
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; use 'adamw' or 'lamb'")
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), opt) if config.max_grad_norm else opt


def layerwise_lr_scales(params, model_cfg, decay: float):
    """Per-parameter learning-rate factors of ELECTRA's layer-wise decay, as a tree shaped like `params`.

    With L layers: the heads and the pooler (the "layer" above the stack) get
    the full rate, encoder layer l (0 = bottom) gets decay ** (L - l), and
    the embeddings (and ALBERT/ELECTRA's embedding projection) decay ** (L + 1).
    A scanned stack keeps its layers on a leading axis of one array, so its
    factor is a [L, 1, ...] array that broadcasts over that axis. A shared
    (ALBERT) stack is one set of weights used by every layer: it gets the
    top layer's decay ** 1.
    """
    layers = model_cfg.num_layers
    per_layer = decay ** (layers - np.arange(layers, dtype=np.float32))

    def scale(path, leaf):
        keys = [str(getattr(k, "key", k)) for k in path]
        if "embeddings" in keys or "embeddings_project" in keys:
            return np.float32(decay ** (layers + 1))
        if "encoder" in keys:
            name = keys[keys.index("encoder") + 1]
            if name.startswith("layers_"):  # unrolled stack
                return np.float32(per_layer[int(name.split("_")[1])])
            if model_cfg.share_layers:
                return np.float32(decay)
            return per_layer.reshape((layers,) + (1,) * (np.ndim(leaf) - 1))
        return np.float32(1.0)

    return jax.tree_util.tree_map_with_path(scale, params)


def with_layerwise_decay(optimizer: optax.GradientTransformation, model_cfg, decay: float):
    """`optimizer` whose updates are scaled by `layerwise_lr_scales` (the rate enters AdamW linearly)."""
    if decay == 1.0:
        return optimizer

    def scale_updates(updates, state, params=None):
        scales = layerwise_lr_scales(updates, model_cfg, decay)
        return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, scales), state

    return optax.chain(optimizer, optax.GradientTransformation(lambda params: optax.EmptyState(), scale_updates))
