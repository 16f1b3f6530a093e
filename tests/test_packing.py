"""Packed fine-tuning batches (training/finetune_packing.py): the packer, and outputs equal to unpacked batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax.config_base import model_config
from bert_jax.models.task_model import build_task_model
from bert_jax.tasks.base import Features
from bert_jax.training.finetune_data import local_rows, make_batch
from bert_jax.training.finetune_packing import (
    PackedTrainOrder,
    first_fit_decreasing,
    pack_batch,
    packing_unsupported,
    packing_width,
)


def _features(lengths, width: int = 48, seed: int = 0) -> Features:
    """Rows of random ids ([CLS]=1 first) with two segments, per-row labels and per-token labels (-100 on padding)."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, np.int32)
    real = np.arange(width)[None, :] < lengths[:, None]
    ids = np.where(real, rng.integers(5, 90, (len(lengths), width)), 0).astype(np.int32)
    ids[:, 0] = 1
    types = (real & (np.arange(width)[None, :] >= lengths[:, None] // 2)).astype(np.int32)
    arrays = {
        "input_ids": ids,
        "attention_mask": real.astype(np.int32),
        "token_type_ids": types,
        "labels": rng.integers(0, 3, len(lengths)).astype(np.int32),
        "token_labels": np.where(real, rng.integers(0, 3, ids.shape), -100).astype(np.int32),
    }
    return Features(arrays, np.arange(len(lengths)), lengths)


def test_first_fit_decreasing_places_every_row_once_within_the_width():
    lengths = [30, 5, 17, 12, 40, 3, 3, 25, 8]
    rows = first_fit_decreasing(lengths, 40)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 40 for r in rows)
    assert len(rows) == 4  # 143 tokens: 4 rows of 40 are the fewest that can hold them
    with pytest.raises(ValueError, match="does not fit the packing width 40"):
        first_fit_decreasing([41], 40)


def test_pack_batch_lays_examples_end_to_end_with_their_own_positions_and_segments():
    features = _features([10, 3, 20, 7, 15])
    rows = np.array([4, 0, 2, 1])
    batch = pack_batch(features, rows, batch_size=6, width=32, num_rows=3, per_example=True)
    assert batch["input_ids"].shape == (3, 32) and batch["pool_index"].shape == (6,)
    assert batch["row_weights"].tolist() == [1, 1, 1, 1, 0, 0]
    np.testing.assert_array_equal(batch["labels"][:4], features.arrays["labels"][rows])
    flat = {k: batch[k].reshape(-1) for k in ("input_ids", "token_type_ids", "position_ids", "attention_mask")}
    for i, row in enumerate(rows):
        n, start = features.lengths[row], batch["pool_index"][i]
        for key in ("input_ids", "token_type_ids"):
            np.testing.assert_array_equal(flat[key][start : start + n], features.arrays[key][row, :n])
        np.testing.assert_array_equal(flat["position_ids"][start : start + n], np.arange(n))
        assert len(set(flat["attention_mask"][start : start + n])) == 1 and flat["attention_mask"][start] > 0
    assert (batch["attention_mask"] > 0).sum() == features.lengths[rows].sum()  # no token twice, none lost
    with pytest.raises(ValueError, match="more than 1"):
        pack_batch(features, rows, 6, 32, 1, True)
    token = pack_batch(features, rows, 6, 32, 3, per_example=False)
    assert token["row_weights"].tolist() == [1, 1, 0] and "pool_index" not in token  # 52 tokens: two rows


def _tiny_model(head_kind: str, num_labels: int):
    cfg = ml_collections.ConfigDict(model_config().to_dict())
    cfg.update(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, embedding_size=32)
    cfg.max_position_embeddings = 64
    return build_task_model(cfg, (("head", head_kind, num_labels),), 0.1)


@pytest.mark.parametrize("head_kind", ["classification", "token"])
def test_packed_batches_give_the_outputs_of_padded_ones(head_kind):
    features = _features([12, 30, 5, 21, 9, 16, 3, 27], width=32, seed=1)
    if head_kind == "token":
        features.arrays["labels"] = features.arrays.pop("token_labels")
    model = _tiny_model(head_kind, 3)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32))["params"]
    rows = np.array([3, 1, 6, 0, 7, 2, 5])
    padded = make_batch(features, rows, 8)
    inputs = lambda b: [jnp.asarray(b[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]  # noqa: E731
    apply = jax.jit(model.apply, static_argnames="mask_kind")
    reference = np.asarray(apply({"params": params}, *inputs(padded))["logits"])
    packed = pack_batch(features, rows, 8, 32, 6, per_example=head_kind == "classification")
    extra = {"position_ids": jnp.asarray(packed["position_ids"])}
    if head_kind == "classification":
        extra["pool_index"] = jnp.asarray(packed["pool_index"])
    out = np.asarray(apply({"params": params}, *inputs(packed), mask_kind="packed", **extra)["logits"])
    if head_kind == "classification":
        np.testing.assert_allclose(out[: len(rows)], reference[: len(rows)], atol=1e-5)
        return
    flat = out.reshape(-1, 3)
    positions = packed["position_ids"].reshape(-1)
    segments = packed["attention_mask"].reshape(-1)
    ids = packed["input_ids"].reshape(-1)
    for i, row in enumerate(rows):  # find each example's tokens: a segment starting at position 0 with its ids
        n = features.lengths[row]
        for start in np.flatnonzero((positions == 0) & (segments > 0)):
            if np.array_equal(ids[start : start + n], features.arrays["input_ids"][row, :n]):
                np.testing.assert_allclose(flat[start : start + n], reference[i, :n], atol=1e-5)
                break
        else:
            raise AssertionError(f"example {row} not found in the packed rows")


def test_packed_train_order_is_random_reproducible_and_divisible():
    features = _features(np.random.default_rng(0).integers(3, 40, 100), width=48)
    order = PackedTrainOrder(features, batch_size=16, seed=3, per_example=True, row_multiple=4)
    assert order.width == packing_width(features) == 48
    again = PackedTrainOrder(features, batch_size=16, seed=3, per_example=True, row_multiple=4)
    for step in (0, 5, 9):  # 7 steps per epoch: 9 is in the second epoch
        np.testing.assert_array_equal(order.rows(step), again.rows(step))
        batch = order.batch(step)
        assert batch["input_ids"].shape[0] % 4 == 0 and batch["pool_index"].shape == (16,)
    sizes = order.own_sizes(0, 7)
    assert all(s % 4 == 0 for s in sizes)
    order.widths = (max(sizes),)
    assert set(order.first_steps_by_size(0, 7)) == {max(sizes)}
    share = local_rows(order.batch(0))  # one process: the whole batch, arrays of different row counts kept
    assert share["input_ids"].shape[0] == max(sizes) and share["labels"].shape == (16,)


def test_packing_applies_only_where_it_can():
    assert packing_unsupported("classification", 1) is None and packing_unsupported("token", 1) is None
    assert "span" in packing_unsupported("span", 1)
    assert "accumulation" in packing_unsupported("regression", 2)


def test_choose_widens_rows_when_two_examples_then_fit():
    lengths = np.r_[np.full(60, 55), [98]]  # MRPC-like pairs: one per row of 98, two per row of 112
    features = _features(lengths, width=98)
    order = PackedTrainOrder(features, batch_size=16, seed=0, per_example=True)
    order.choose(steps=4, compile_cost_tokens=0, max_seq_length=128, attention_tokens=1e9)
    assert order.width == 112 and max(order.widths) == 8  # 16 examples two to a row
    assert all(order.size(order.rows(s)) in order.widths for s in range(4))
    longer = PackedTrainOrder(_features(np.r_[np.full(60, 70), [98]], width=98), 16, 0, per_example=True)
    longer.choose(steps=4, compile_cost_tokens=0, max_seq_length=128, attention_tokens=1e9)
    assert longer.width == 98  # one per row at any width up to 128: the narrowest rows
    long_run = PackedTrainOrder(features, batch_size=16, seed=0, per_example=True)
    long_run.choose(steps=3000, compile_cost_tokens=0, max_seq_length=128, attention_tokens=1e9)  # width on a sample
    assert long_run.width == 112 and all(long_run.size(long_run.rows(s)) in long_run.widths for s in range(3000))
