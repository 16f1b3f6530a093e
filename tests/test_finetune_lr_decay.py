"""ELECTRA's layer-wise learning-rate decay on a tiny task model: factors, and the optimizer's actual steps."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict

from bert_jax.config_finetune import finetune_config
from bert_jax.models.task_model import build_task_model
from bert_jax.training.optimizers import layerwise_lr_scales, make_optimizer, with_layerwise_decay

DECAY, LAYERS = 0.5, 3


def _model(scan: bool):
    config = finetune_config("sst2", total_steps=10, warmup_steps=0, learning_rate=1e-3, weight_decay=0.0)
    config.model.update(
        num_layers=LAYERS, hidden_size=16, num_heads=2, intermediate_size=32, embedding_size=16, vocab_size=50,
        scan_layers=scan,
    )  # fmt: skip
    model = build_task_model(config.model, (("head", "classification", 2),), 0.0)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    return config, nn.meta.unbox(params)


@pytest.mark.parametrize("scan", [True, False])
def test_factors(scan):
    config, params = _model(scan)
    scales = flatten_dict(layerwise_lr_scales(params, config.model, DECAY))
    expected_layer = [DECAY ** (LAYERS - layer) for layer in range(LAYERS)]  # bottom layer 0 .. top layer 2
    for key, value in scales.items():
        name = "/".join(key)
        if "embeddings" in key:
            assert float(value) == pytest.approx(DECAY ** (LAYERS + 1)), name
        elif key[0] == "head" or "pooler" in key:
            assert float(value) == 1.0, name
        elif scan:  # one array, the layer axis first
            assert np.asarray(value).reshape(-1).tolist() == pytest.approx(expected_layer), name
            assert np.ndim(value) == np.ndim(flatten_dict(params)[key]), name
        else:
            assert float(value) == pytest.approx(expected_layer[int(key[2].split("_")[1])]), name


def test_first_adam_step_is_scaled_per_layer():
    """Adam's first update is about lr * sign(g) per element, so its size shows each parameter's rate."""
    config, params = _model(True)
    optimizer = with_layerwise_decay(make_optimizer(config), config.model, DECAY)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    flat = flatten_dict(updates)
    lr = config.learning_rate  # the schedule's first rate without warmup
    qkernel = np.abs(np.asarray(flat[("backbone", "encoder", "layers", "attention", "query", "kernel")]))
    for layer in range(LAYERS):
        assert qkernel[layer].mean() == pytest.approx(lr * DECAY ** (LAYERS - layer), rel=1e-3)
    word = np.abs(np.asarray(flat[("backbone", "embeddings", "word_embeddings", "embedding")]))
    assert word.mean() == pytest.approx(lr * DECAY ** (LAYERS + 1), rel=1e-3)
    head = np.abs(np.asarray(flat[("head", "classifier", "kernel")]))
    assert head.mean() == pytest.approx(lr, rel=1e-3)
    plain, _ = make_optimizer(config).update(grads, make_optimizer(config).init(params), params)
    assert optax.global_norm(plain) > optax.global_norm(updates)
