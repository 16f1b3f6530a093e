"""Batches of task features for fine-tuning: length bucketing, dynamic padding, deterministic order.

Each batch is padded to its own longest row rounded up to a multiple of
`PAD_MULTIPLE`, or to the next of a few widths (`finetune.bucket_widths`),
and at most the features' width (their longest row), so the jitted step sees
a handful of shapes instead of one per batch. Every shape costs one XLA
compile of the train step (seconds on a CPU), so a short run is faster with
fewer, coarser widths and a long one with finer ones: `choose_widths` picks
them per run from the batches it will compute. The order of an epoch
depends only on (seed, epoch): the batch of global step s is recomputed
from s, so resuming needs no data state.
Batches always have `batch_size` rows; rows added to fill the last one have
`row_weights` 0 and contribute nothing to the loss or the metrics.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import jax
import numpy as np

from bert_jax.errors import ConfigError
from bert_jax.tasks.base import Features

PAD_MULTIPLE = 16
AUTO = "auto"  # finetune.bucket_widths: chosen per run by `choose_widths`


def subset(examples: list, limit: int, seed: int = 0) -> list:
    """At most `limit` examples (0: all), a fixed random subset in file order (the run's seed does not change it)."""
    if not limit or limit >= len(examples):
        return list(examples)
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


def parse_widths(text: str) -> tuple[int, ...] | str:
    """`finetune.bucket_widths` ("16,32,64,128") as sorted positive ints; empty: (); "auto": AUTO."""
    if str(text).strip() == AUTO:
        return AUTO
    try:
        widths = sorted({int(w) for w in str(text).split(",") if w.strip()})
    except ValueError:
        widths = [0]
    if any(w <= 0 for w in widths):
        raise ConfigError(f"finetune.bucket_widths {text!r} must be 'auto' or comma-separated positive integers")
    return tuple(widths)


def choose_widths(required: Sequence[int], rows_per_batch: int, compile_cost_tokens: float) -> tuple[int, ...]:
    """The batch widths that minimise `compile_cost_tokens` per width used + the padded tokens computed.

    `required` holds each batch's own width (`batch_width` without widths:
    its longest row rounded up to PAD_MULTIPLE), one entry per batch the run
    computes. Every chosen width is one of them, each batch is padded to the
    smallest chosen width that holds it, and the largest is always chosen.
    An exact dynamic programme over the (few) distinct widths.
    """
    counts = sorted(collections.Counter(required).items())
    if not counts:
        return ()
    widths = [w for w, _ in counts]
    best, cut = [0.0] + [math.inf] * len(counts), [0] * (len(counts) + 1)
    for end in range(1, len(counts) + 1):  # widths[end - 1] is chosen and holds the batches of widths[start:end]
        batches = 0
        for start in range(end - 1, -1, -1):
            batches += counts[start][1]
            cost = best[start] + compile_cost_tokens + batches * rows_per_batch * widths[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chosen, end = [], len(counts)
    while end:
        chosen.append(widths[end - 1])
        end = cut[end]
    return tuple(sorted(chosen))


def batch_width(features: Features, rows: np.ndarray, widths: Sequence[int] = ()) -> int:
    """The padded length of a batch of `rows`: its longest row rounded up to the next of `widths` (none:
    to a multiple of PAD_MULTIPLE), at most the features' width."""
    width = features.arrays["input_ids"].shape[-1]
    longest = int(features.lengths[rows].max()) if len(rows) else 1
    fits = [w for w in widths if w >= longest]
    padded = fits[0] if fits else math.ceil(longest / PAD_MULTIPLE) * PAD_MULTIPLE
    return min(padded, width)


def per_token_keys(features: Features) -> list[str]:
    """The arrays of `features` with a token axis last (ids, masks, token labels), as opposed to per-row ones."""
    width = features.arrays["input_ids"].shape[-1]
    return [k for k, a in features.arrays.items() if a.ndim >= 2 and a.shape[-1] == width]


def make_batch(
    features: Features, rows: np.ndarray, batch_size: int, widths: Sequence[int] = ()
) -> dict[str, np.ndarray]:
    """The arrays of `rows`, cut to the batch's width, with padding rows up to `batch_size` and `row_weights`."""
    cut = batch_width(features, rows, widths)
    per_token = per_token_keys(features)
    batch = {}
    for key, array in features.arrays.items():
        part = array[rows]
        if key in per_token:
            part = part[..., :cut]
        fill = np.zeros((batch_size - len(rows), *part.shape[1:]), part.dtype)
        batch[key] = np.concatenate([part, fill])
    batch["row_weights"] = (np.arange(batch_size) < len(rows)).astype(np.float32)
    return batch


def local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's share of a global batch (all of it on one host): an equal part of each array's rows.

    Arrays may differ in rows (a packed batch's token rows and its examples); packed
    `pool_index` values are positions in the global batch, so they stay valid.
    """
    count, index = jax.process_count(), jax.process_index()
    return {k: v[index * (len(v) // count) : (index + 1) * (len(v) // count)] for k, v in batch.items()}


class TrainOrder:
    """Which rows make the batch of each global step: shuffled per epoch, bucketed by length if asked.

    A batch's "size" is the shape the step is compiled for: here its width
    (`widths`: the widths a run uses, see `choose_widths`);
    finetune_packing.PackedTrainOrder counts packed rows instead. One more
    size costs one compile; one more unit of size `tokens_per_size` tokens.
    """

    def __init__(
        self,
        features: Features,
        batch_size: int,
        seed: int,
        bucket: bool,
        widths: Sequence[int] = (),
        window_batches: int = 50,
    ):
        self.features, self.batch_size, self.seed, self.bucket = features, batch_size, seed, bucket
        self.window_batches = max(int(window_batches), 1)  # bucketing: sorted by length inside, then shuffled
        self.widths = tuple(widths)
        self.tokens_per_size = batch_size
        self.runs_in_larger_sizes = False  # see PackedTrainOrder
        self.steps_per_epoch = max(math.ceil(len(features) / batch_size), 1)
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.features))
        if not self.bucket:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        window = self.batch_size * self.window_batches
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.features.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def rows(self, step: int) -> np.ndarray:
        """The feature rows of the batch of 0-based `step`."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return self._batches[index]

    def own_size(self, rows: np.ndarray) -> int:
        """The size of the batch of `rows` without `widths` (the input of `choose_widths`)."""
        return batch_width(self.features, rows)

    def size(self, rows: np.ndarray) -> int:
        """The size the batch of `rows` is compiled for, given `widths`."""
        return batch_width(self.features, rows, self.widths)

    def make(self, rows: np.ndarray, size: int | None = None) -> dict[str, np.ndarray]:
        """The batch of `rows`, at `size` when given (at least `size(rows)`: a larger compiled shape)."""
        return make_batch(self.features, rows, self.batch_size, self.widths if size is None else (size,))

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The global batch of 0-based `step`."""
        return self.make(self.rows(step))

    def own_sizes(self, start: int, stop: int) -> list[int]:
        """Each step's `own_size` in [start, stop)."""
        return [self.own_size(self.rows(step)) for step in range(start, stop)]

    def first_steps_by_size(self, start: int, stop: int) -> dict[int, int]:
        """{size: the first step in [start, stop) with a batch of that size}, in order of first use."""
        first: dict[int, int] = {}
        for step in range(start, stop):
            first.setdefault(self.size(self.rows(step)), step)
        return first


def eval_rows(features: Features, batch_size: int) -> list[np.ndarray]:
    """The rows of each evaluation batch: every row once, sorted by length so each batch pads little."""
    order = np.argsort(features.lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def eval_batches(features: Features, batch_size: int, widths: Sequence[int] = ()):
    """(rows, batch) of each evaluation batch (`eval_rows`)."""
    for rows in eval_rows(features, batch_size):
        yield rows, make_batch(features, rows, batch_size, widths)
