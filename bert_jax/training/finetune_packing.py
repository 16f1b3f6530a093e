"""Packed fine-tuning batches: random batches of examples laid end to end in rows, without padding tokens.

Length bucketing (finetune_data.py) saves the padding of random batches but
makes every batch one length class (SST-2's phrases apart from its long
sentences, CoNLL-2003's `-DOCSTART-` lines apart from its sentences), which
cost 2-5 points of dev score in bench/RESULTS_finetune.md. Packing keeps
the random batches of the usual recipe and removes the padding instead:
the `batch_size` examples of a step are placed first-fit-decreasing into
rows of `width` tokens; `attention_mask` holds each token's segment number
in its row (1, 2, ...; 0 on padding) for the model's 'packed' mask, which
lets a token attend only within its own example; `position_ids` restart at
the first position (0; RoBERTa's 2) in every segment; and `pool_index` gives
the flat position (row * width + column) of each example's [CLS] for the
pooled heads. The model's outputs
are then exactly those of the unpacked batch (tests/test_packing.py).

The number of rows varies from batch to batch; like the widths of bucketing,
the row counts a run uses are few (`choose_widths` picks them), because each
is one XLA compile of the train step. Pooled heads (classification,
regression) get per-example `labels` and `row_weights` [batch_size]; the
token head gets per-token labels [rows, width] and per-row `row_weights`.
Evaluation keeps sorted, padded batches: its order does not matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bert_jax.tasks.base import Features
from bert_jax.training.finetune_data import PAD_MULTIPLE, TrainOrder, choose_widths, per_token_keys

WIDTH_SAMPLE_STEPS = 2000  # PackedTrainOrder.choose: steps sampled to pick the row width
PACKABLE_HEADS = {"classification": True, "regression": True, "token": False}  # head -> outputs per example?


def packing_unsupported(head: str, grad_accum_steps: int) -> str | None:
    """Why a run cannot pack its batches (None: it can)."""
    if head not in PACKABLE_HEADS:
        return f"the {head!r} head reads positions of unpacked rows; packing serves {sorted(PACKABLE_HEADS)}"
    if grad_accum_steps > 1:
        return "gradient accumulation splits the batch's rows into micro-batches, which packed rows do not allow"
    return None


def first_fit_decreasing(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices into `lengths` grouped into rows of at most `width` tokens: longest first, each into the first
    row with room (at most 11/9 of the fewest rows possible, plus one)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -int(lengths[i])):
        n = int(lengths[i])
        if n > width:
            raise ValueError(f"a row of {n} tokens does not fit the packing width {width}")
        slot = next((r for r, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append([]), free.append(width)
            slot = len(rows) - 1
        rows[slot].append(i)
        free[slot] -= n
    return rows


def packing_width(features: Features) -> int:
    """The packed rows' width: the features' longest row rounded up to PAD_MULTIPLE, at most their width."""
    width = features.arrays["input_ids"].shape[-1]
    longest = int(features.lengths.max()) if len(features) else 1
    return min(math.ceil(longest / PAD_MULTIPLE) * PAD_MULTIPLE, width)


def pack_batch(
    features: Features,
    rows: np.ndarray,
    batch_size: int,
    width: int,
    num_rows: int,
    per_example: bool,
    first_position: int = 0,
) -> dict[str, np.ndarray]:
    """The examples `rows` of `features` packed into `num_rows` rows of `width` (see the module docstring).

    Each example's positions count from `first_position` (`models.bert.first_position`: 0, RoBERTa's 2)."""
    per_token = per_token_keys(features)
    lengths = features.lengths[rows]
    bins = first_fit_decreasing(lengths, width)
    if len(bins) > num_rows:
        raise ValueError(f"{len(rows)} examples need {len(bins)} packed rows of {width}, more than {num_rows}")
    batch = {k: np.zeros((num_rows, width), features.arrays[k].dtype) for k in per_token}
    batch["position_ids"] = np.zeros((num_rows, width), np.int32)
    pool_index = np.zeros(batch_size, np.int32)
    for r, members in enumerate(bins):
        column = 0
        for segment, i in enumerate(members, start=1):
            row, n = rows[i], int(lengths[i])
            for key in per_token:
                batch[key][r, column : column + n] = features.arrays[key][row, :n]
            batch["attention_mask"][r, column : column + n] = segment
            batch["position_ids"][r, column : column + n] = np.arange(first_position, first_position + n)
            pool_index[i] = r * width + column
            column += n
    for key, array in features.arrays.items():
        if key not in per_token:
            part = array[rows]
            batch[key] = np.concatenate([part, np.zeros((batch_size - len(rows), *part.shape[1:]), part.dtype)])
    if per_example:
        batch["pool_index"] = pool_index
        batch["row_weights"] = (np.arange(batch_size) < len(rows)).astype(np.float32)
    else:
        batch["row_weights"] = (np.arange(num_rows) < len(bins)).astype(np.float32)
    return batch


def candidate_widths(features: Features, max_seq_length: int) -> list[int]:
    """Packing widths worth trying: the longest row, then multiples of PAD_MULTIPLE up to max_seq_length."""
    shortest = packing_width(features)
    multiples = range(math.ceil(shortest / PAD_MULTIPLE) * PAD_MULTIPLE, max_seq_length + 1, PAD_MULTIPLE)
    return sorted({shortest, *multiples})


class PackedTrainOrder(TrainOrder):
    """`TrainOrder` with random batches packed into rows; `widths` here are the row counts a run uses.

    `row_multiple` (the devices the batch is split over) divides every row
    count, so each device gets whole rows. A batch can run in a larger row
    count than its own (`runs_in_larger_sizes`: FineTuner.train_step does so
    while its own shape compiles) with the same update: the added rows are
    empty, and appending rows leaves the dropout masks of the others
    unchanged (models/dropout.py hashes each element's row-major index).
    """

    def __init__(
        self,
        features: Features,
        batch_size: int,
        seed: int,
        per_example: bool,
        row_multiple: int = 1,
        first_position: int = 0,
    ):
        super().__init__(features, batch_size, seed, bucket=False)
        self.width, self.per_example, self.row_multiple = packing_width(features), per_example, max(row_multiple, 1)
        self.first_position = first_position  # pack_batch: the position id each example starts at
        self.tokens_per_size = self.width  # choose_widths: one more row costs `width` tokens
        self.runs_in_larger_sizes = True

    def own_size(self, rows: np.ndarray) -> int:
        """Rows needed by the examples `rows`, rounded up to `row_multiple`."""
        needed = max(len(first_fit_decreasing(self.features.lengths[rows], self.width)), 1)
        return math.ceil(needed / self.row_multiple) * self.row_multiple

    def size(self, rows: np.ndarray) -> int:
        own = self.own_size(rows)
        return next((w for w in self.widths if w >= own), own)

    def make(self, rows: np.ndarray, size: int | None = None) -> dict[str, np.ndarray]:
        size = self.size(rows) if size is None else size
        return pack_batch(self.features, rows, self.batch_size, self.width, size, self.per_example, self.first_position)

    def choose(self, steps: int, compile_cost_tokens: float, max_seq_length: int, attention_tokens: float) -> None:
        """Sets `width` and the row counts (`widths`) for steps [0, steps) at the least estimated cost.

        A wider row fits pairs of longer examples (MRPC's ~55-token pairs two to
        a row of 112-128, one to a row of 98), but attention costs more per
        token: the cost of a width is compile_cost_tokens per row count used
        plus the packed tokens times (1 + width / attention_tokens).
        """
        # Long runs: the width is chosen on an even sample of the steps (packing a batch takes ~40 us).
        sample = np.unique(np.linspace(0, steps - 1, min(steps, WIDTH_SAMPLE_STEPS)).astype(int)) if steps else []
        scale = steps / max(len(sample), 1)
        best = None
        for width in candidate_widths(self.features, max_seq_length):
            self.width, self.widths, self.tokens_per_size = width, (), width
            own = [self.own_size(self.rows(int(step))) for step in sample]
            sizes = choose_widths(own, width, compile_cost_tokens / scale)
            tokens = scale * sum(next(s for s in sizes if s >= rows) * width for rows in own)
            cost = compile_cost_tokens * len(sizes) + tokens * (1 + width / attention_tokens)
            if best is None or cost < best[0]:
                best = (cost, width)
        self.width = self.tokens_per_size = best[1]
        self.widths = choose_widths(self.own_sizes(0, steps), self.width, compile_cost_tokens)
