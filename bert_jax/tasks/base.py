"""What a fine-tuning task is: examples in, model inputs, a head, a loss, predictions and official metrics.

The fine-tuning trainer (`bert_jax/training/finetune.py`) knows nothing about
GLUE, SQuAD or CoNLL: it asks the task named by `config.finetune.task` for
its examples, features and head, runs the shared train/eval loop, and hands
the model's outputs back to the task to decode and score. A new task is a
subclass registered in `TASKS` (`bert_jax/tasks/__init__.py`) plus a config
file in `configs/finetune/`.

Conventions every task follows:
- `Features.arrays` are numpy arrays with one row per model input row:
  always `input_ids`, `attention_mask`, `token_type_ids` [rows, length]
  (for multiple choice [rows, choices, length]), plus the task's label
  arrays (`labels`, or `start_positions`/`end_positions`, ...). Rows may be
  padded only to the batch's own longest row (dynamic padding): the trainer
  pads each batch, so features keep their true lengths in `lengths`.
- `Features.example_index[row]` is the example a row came from (SQuAD
  windows and multiple-choice rows map many rows to one example).
- `head` names the head the model gets: 'classification' (pooled output ->
  `num_labels` logits), 'regression' (pooled -> 1), 'span' (per-token start
  and end logits), 'token' (per-token `num_labels` logits), 'choice' (pooled
  output of each choice -> 1 score, softmax over choices).
- `metrics` returns lower-case official names (`accuracy`, `f1`, `mcc`,
  `pearson`, `spearman`, `exact_match`), values in [0, 100] for
  percentages as the official scripts print them, or [-1, 1] for
  correlations and MCC.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax.data.tokenizers import Tokenizer

HEADS = ("classification", "regression", "span", "token", "choice")


@dataclasses.dataclass
class Features:
    """Model inputs (and labels) of a split, one row per input row, with the row -> example map."""

    arrays: dict[str, np.ndarray]
    example_index: np.ndarray
    lengths: np.ndarray  # real (unpadded) length of each row, for dynamic padding / bucketing
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. SQuAD offset maps

    def __len__(self) -> int:
        return len(self.example_index)


class Task(abc.ABC):
    """One fine-tuning task; subclasses set `name`, `head`, and implement the methods."""

    name: str
    head: str
    splits: tuple[str, ...] = ("train", "dev")

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @property
    def num_labels(self) -> int:
        """Output size of the head ('classification' and 'token' heads)."""
        return 1

    @abc.abstractmethod
    def read(self, split: str) -> Sequence[Any]:
        """The examples of `split` from `config.data.dir` (or tfds); a clear error on malformed input."""

    @abc.abstractmethod
    def featurize(self, examples: Sequence[Any], tokenizer: Tokenizer, max_seq_length: int) -> Features:
        """Tokenized model inputs and labels of `examples`."""

    @abc.abstractmethod
    def loss(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        """Mean loss over the batch's real rows (`batch['row_weights']` is 0 on padding rows) and its metrics."""

    def loss_weight(self, batch: dict[str, jax.Array]) -> jax.Array:
        """What `loss` averages over in `batch` (its real rows; token tasks: their labelled tokens).

        Under gradient accumulation the trainer weighs each micro-batch's
        mean loss by its share of this count, so the sum is the global batch's mean.
        """
        return batch["row_weights"].astype(jax.numpy.float32).sum()

    @abc.abstractmethod
    def predict(self, outputs: dict[str, np.ndarray], features: Features, examples: Sequence[Any]) -> list[Any]:
        """One prediction per example from the head's outputs over all rows of `features` (numpy)."""

    @abc.abstractmethod
    def metrics(self, predictions: list[Any], examples: Sequence[Any]) -> dict[str, float]:
        """The task's official dev metrics, computed as its official script does."""

    @abc.abstractmethod
    def write_predictions(self, predictions: list[Any], examples: Sequence[Any], path_prefix: str) -> str:
        """Writes predictions in the task's usual format to `path_prefix` + extension; returns the path."""
