"""optax optimizers of the papers: AdamW (BERT) and LAMB (ALBERT), with their schedules.

Weight decay is masked off LayerNorm parameters and biases, gradients are
clipped by global norm. Gradient accumulation lives in the train step (one
optimizer update per global batch, whatever the number of micro-batches).
"""

from __future__ import annotations

import ml_collections
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
