"""Batches of task features for fine-tuning: length bucketing, dynamic padding, deterministic order.

Each batch is padded to its own longest row rounded up to a multiple of
`PAD_MULTIPLE` (and at most the features' width), so the jitted step sees a
handful of shapes (at most max_seq_length / PAD_MULTIPLE + 1) instead of one
per batch. The order of an epoch depends only on (seed, epoch): the batch of
global step s is recomputed from s, so resuming needs no data state.
Batches always have `batch_size` rows; rows added to fill the last one have
`row_weights` 0 and contribute nothing to the loss or the metrics.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from bert_jax.tasks.base import Features

PAD_MULTIPLE = 16
BUCKET_BATCHES = 50  # batches per bucketing window: sorted by length inside it, then shuffled


def subset(examples: list, limit: int, seed: int = 0) -> list:
    """At most `limit` examples (0: all), a fixed random subset in file order (the run's seed does not change it)."""
    if not limit or limit >= len(examples):
        return list(examples)
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


def batch_width(features: Features, rows: np.ndarray) -> int:
    """The padded length of a batch of `rows`: its longest row rounded up to PAD_MULTIPLE."""
    width = features.arrays["input_ids"].shape[-1]
    longest = int(features.lengths[rows].max()) if len(rows) else 1
    return min(math.ceil(longest / PAD_MULTIPLE) * PAD_MULTIPLE, width)


def make_batch(features: Features, rows: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """The arrays of `rows`, cut to the batch's width, with padding rows up to `batch_size` and `row_weights`."""
    width = features.arrays["input_ids"].shape[-1]
    cut = batch_width(features, rows)
    batch = {}
    for key, array in features.arrays.items():
        part = array[rows]
        if part.ndim >= 2 and part.shape[-1] == width:  # per-token arrays (ids, masks, token labels)
            part = part[..., :cut]
        fill = np.zeros((batch_size - len(rows), *part.shape[1:]), part.dtype)
        batch[key] = np.concatenate([part, fill])
    batch["row_weights"] = (np.arange(batch_size) < len(rows)).astype(np.float32)
    return batch


def local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's share of a global batch (all of it on one host)."""
    n, count, index = len(batch["row_weights"]), jax.process_count(), jax.process_index()
    share = n // count
    return {k: v[index * share : (index + 1) * share] for k, v in batch.items()}


class TrainOrder:
    """Which rows make the batch of each global step: shuffled per epoch, bucketed by length if asked."""

    def __init__(self, features: Features, batch_size: int, seed: int, bucket: bool):
        self.features, self.batch_size, self.seed, self.bucket = features, batch_size, seed, bucket
        self.steps_per_epoch = max(math.ceil(len(features) / batch_size), 1)
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.features))
        if not self.bucket:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        window = self.batch_size * BUCKET_BATCHES
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.features.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The global batch of 0-based `step`."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return make_batch(self.features, self._batches[index], self.batch_size)


def eval_batches(features: Features, batch_size: int):
    """(rows, batch) over every row once, sorted by length so each batch pads little."""
    order = np.argsort(features.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, make_batch(features, rows, batch_size)
