"""Fine-tuning updates equal transformers' step by step: same loss, AdamW, schedule, decay mask and clipping.

A tiny `transformers.BertForSequenceClassification` and bert_jax's task
model with the same weights take the same batches (dropout off on both
sides, so the comparison is exact): bert_jax's batches packed
(finetune_packing.py), transformers' padded, as in the fine-tuning
benchmark (bench/RESULTS_finetune.md). Each step's loss and the weights at
the end must agree to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from bert_jax import load_pretrained
from bert_jax.config_finetune import finetune_config
from bert_jax.models.task_model import build_task_model
from bert_jax.tasks import get_task
from bert_jax.tasks.base import Features
from bert_jax.training.finetune_packing import pack_batch
from bert_jax.training.optimizers import make_optimizer
from tests.hf_reference import SMALL

STEPS, BATCH, WIDTH = 8, 8, 24


def _rows(rng: np.random.Generator, count: int) -> Features:
    """Sentence pairs of 4-24 tokens ([CLS] first, two segments) with binary labels."""
    lengths = rng.integers(4, WIDTH + 1, count).astype(np.int32)
    real = np.arange(WIDTH)[None, :] < lengths[:, None]
    ids = np.where(real, rng.integers(5, SMALL["vocab_size"], (count, WIDTH)), 0).astype(np.int32)
    ids[:, 0] = 2
    types = (real & (np.arange(WIDTH)[None, :] >= lengths[:, None] // 2)).astype(np.int32)
    arrays = {"input_ids": ids, "attention_mask": real.astype(np.int32), "token_type_ids": types}
    arrays["labels"] = rng.integers(0, 2, count).astype(np.int32)
    return Features(arrays, np.arange(count), lengths)


def test_packed_adamw_steps_equal_transformers(tmp_path):
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(
        **SMALL, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    hf = transformers.BertForSequenceClassification(hf_config).eval()  # eval: no dropout; gradients still flow
    hf.bert.save_pretrained(tmp_path / "bert")
    _, backbone, loaded = load_pretrained(str(tmp_path / "bert"))
    config = finetune_config("sst2", learning_rate=1e-3, total_steps=STEPS, warmup_steps=2, weight_decay=0.01)
    config.model = loaded.model
    model = build_task_model(config.model, (("head", "classification", 2),), head_dropout=0.0)
    # copies: torch's optimizer updates its tensors in place, and .numpy() shares their memory
    head = {
        "kernel": hf.classifier.weight.detach().numpy().T.copy(),
        "bias": hf.classifier.bias.detach().numpy().copy(),
    }
    params = jax.tree.map(jnp.asarray, {"backbone": backbone, "head": {"classifier": head}})
    optimizer, task = make_optimizer(config), get_task(config)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        def loss_fn(p):
            inputs = [batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
            out = model.apply(
                {"params": p},
                *inputs,
                position_ids=batch["position_ids"],
                pool_index=batch["pool_index"],
                mask_kind="packed",
            )
            return task.loss(out, batch)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, loss

    named = list(hf.named_parameters())
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    torch_opt = torch.optim.AdamW(groups, lr=1e-3, eps=1e-6)
    schedule = transformers.get_linear_schedule_with_warmup(torch_opt, 2, STEPS)

    rng = np.random.default_rng(0)
    features = _rows(rng, STEPS * BATCH)
    for s in range(STEPS):
        rows = np.arange(s * BATCH, (s + 1) * BATCH)
        packed = pack_batch(features, rows, BATCH, WIDTH, num_rows=BATCH, per_example=True)
        params, opt_state, loss = step(params, opt_state, {k: jnp.asarray(v) for k, v in packed.items()})
        torch_batch = {k: torch.tensor(features.arrays[k][rows]).long() for k in features.arrays}
        torch_loss = hf(**torch_batch).loss
        torch_loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        torch_opt.step(), schedule.step(), torch_opt.zero_grad()
        assert abs(float(loss) - float(torch_loss)) < 1e-5, (s, float(loss), float(torch_loss))
    kernel = np.asarray(params["head"]["classifier"]["kernel"])
    moved = np.abs(kernel - head["kernel"]).max()
    np.testing.assert_allclose(kernel, hf.classifier.weight.detach().numpy().T, atol=1e-5 * max(moved, 1.0))
    assert moved > 1e-3  # the steps really changed the weights
    layer = params["backbone"]["encoder"]["layers"]["intermediate"]["kernel"][0]  # the first layer's FFN kernel
    reference = hf.bert.encoder.layer[0].intermediate.dense.weight.detach().numpy().T
    np.testing.assert_allclose(np.asarray(layer), reference, atol=1e-5)
