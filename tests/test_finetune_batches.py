"""Batch widths of fine-tuning (finetune_data.py) and the ahead-of-time step compiles (precompile.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.errors import ConfigError
from bert_jax.tasks.base import Features
from bert_jax.training.finetune_data import AUTO, TrainOrder, batch_width, choose_widths, make_batch, parse_widths
from bert_jax.training.precompile import AheadOfTime


def _features(lengths, width=None) -> Features:
    lengths = np.asarray(lengths, np.int32)
    width = width or int(lengths.max())
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    arrays = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
    return Features(arrays, np.arange(len(lengths)), lengths)


def test_parse_widths():
    assert parse_widths("") == ()
    assert parse_widths("128, 32,64") == (32, 64, 128)
    assert parse_widths("auto") == AUTO
    for bad in ("0,32", "a,b", "-16"):
        with pytest.raises(ConfigError, match="bucket_widths"):
            parse_widths(bad)


def test_batch_width_rounds_up_to_the_next_width_but_not_past_the_features():
    features = _features([5, 20, 40, 70])
    assert batch_width(features, np.array([0])) == 16  # no widths: multiples of 16
    assert batch_width(features, np.array([0, 1])) == 32
    assert batch_width(features, np.array([0, 1]), (32, 64, 128)) == 32
    assert batch_width(features, np.array([2]), (32, 64, 128)) == 64
    assert batch_width(features, np.array([3]), (32, 64, 128)) == 70  # the features' own width (longest row)
    assert batch_width(features, np.array([3]), (32, 64)) == 70  # longer than every width: multiple of 16, capped
    batch = make_batch(features, np.array([2, 0]), 4, (32, 64))
    assert batch["input_ids"].shape == (4, 64) and batch["row_weights"].tolist() == [1, 1, 0, 0]
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), [40, 5, 0, 0])


def test_choose_widths_trades_compiles_for_padding():
    # 10 batches of width 16, 1 of 32, 1 of 48, 1 of 64; 8 rows per batch.
    required = [16] * 10 + [32, 48, 64]
    assert choose_widths(required, 8, compile_cost_tokens=0) == (16, 32, 48, 64)  # compiles free: no padding
    assert choose_widths(required, 8, compile_cost_tokens=1e9) == (64,)  # compiles dear: one width
    # Merging 32 and 48 into 64 pads 8 * (32 + 16) = 384 tokens more; 16 into 64 would pad 3840 more.
    assert choose_widths(required, 8, compile_cost_tokens=500) == (16, 64)
    assert choose_widths([], 8, 100) == ()


def _cost(required, rows, compile_cost, widths):
    return compile_cost * len(widths) + sum(rows * min(w for w in widths if w >= r) for r in required)


def test_choose_widths_is_the_cheapest_choice():
    rng = np.random.default_rng(1)
    for _ in range(20):
        required = list(16 * rng.integers(1, 9, rng.integers(1, 40)))
        compile_cost = float(rng.choice([0, 100, 1000, 10000]))
        distinct = sorted(set(required))
        subsets = [
            tuple(w for i, w in enumerate(distinct[:-1]) if mask >> i & 1) + (distinct[-1],)
            for mask in range(2 ** (len(distinct) - 1))
        ]
        best = min(_cost(required, 4, compile_cost, s) for s in subsets)
        chosen = choose_widths(required, 4, compile_cost)
        assert chosen[-1] == distinct[-1] and set(chosen) <= set(distinct)
        assert _cost(required, 4, compile_cost, chosen) == pytest.approx(best)


def test_train_order_widths_change_padding_only():
    features = _features(np.random.default_rng(0).integers(3, 100, 64))
    fine, coarse = TrainOrder(features, 8, 0, True), TrainOrder(features, 8, 0, True, (32, 128))
    own = fine.own_sizes(0, 16)
    assert len(own) == 16 and set(own) <= {16, 32, 48, 64, 80, 96, 99}
    for step in range(16):
        np.testing.assert_array_equal(fine.rows(step), coarse.rows(step))
        assert coarse.batch(step)["input_ids"].shape[1] in (32, 99)
    first = coarse.first_steps_by_size(0, 16)
    assert set(first) <= {32, 99} and all(coarse.batch(s)["input_ids"].shape[1] == w for w, s in first.items())


def test_ahead_of_time_call_matches_jit_and_falls_back():
    traced = []

    def double(x, scale=1):
        traced.append(x.shape)
        return x * 2 * scale

    fn = jax.jit(double, static_argnames="scale")
    aot = AheadOfTime(workers=2)
    aot.submit(fn, (jax.ShapeDtypeStruct((3,), jnp.float32),), scale=3)
    aot.submit(fn, (jax.ShapeDtypeStruct((5,), jnp.float32),))
    np.testing.assert_allclose(aot.call(fn, jnp.ones(3), scale=3), 6.0)
    np.testing.assert_allclose(aot.call(fn, jnp.ones(5)), 2.0)
    assert len(traced) == 2  # the two submitted shapes, traced once each
    assert aot.ready(fn, jnp.ones(5)) and not aot.pending(fn, jnp.ones(5))  # compiled (call waited for it)
    assert not aot.ready(fn, jnp.ones(4)) and not aot.pending(fn, jnp.ones(4))  # never submitted
    np.testing.assert_allclose(aot.call(fn, jnp.ones(4)), 2.0)  # not submitted: plain jit
    assert len(traced) == 3
    aot.close()
    np.testing.assert_allclose(aot.call(fn, jnp.ones(3), scale=3), 6.0)  # after close: jit (compiles again)
