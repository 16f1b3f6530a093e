"""The nine GLUE tasks: the GLUE TSV layout (or tensorflow-datasets `glue/<task>`) -> sentence (pair) inputs.

One `GlueTask` class with a table row per task (files, columns, labels,
metrics) rather than nine readers: the tasks differ only in data. Columns
are found by their header names (MNLI's train and dev files have different
column counts); CoLA has no header and is read by position. Labels are
mapped from their strings as they appear in the files; an unknown label or
a missing column stops with the file, the line and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import fileio
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import ConfigError, DataError
from bert_jax.objectives.losses import classification_terms
from bert_jax.tasks import metrics as glue_metrics
from bert_jax.tasks.base import Features, Task

BINARY = ("0", "1")
NLI = ("entailment", "not_entailment")
QQP_KEYS = ("question1", "question2")


@dataclasses.dataclass(frozen=True)
class GlueExample:
    index: int  # row of the file (the GLUE submission's `index`)
    text_a: str
    text_b: str | None
    label: int | float | None  # label id, regression target, or None (unlabelled)


@dataclasses.dataclass(frozen=True)
class GlueSpec:
    """How one GLUE task's data looks; `columns` are header names, or positions when `header` is False."""

    tfds_name: str
    columns: tuple  # (text_a, text_b or None, label)
    labels: tuple[str, ...] | None  # None: regression (STS-B)
    metrics: tuple[str, ...]  # the first picks the kept checkpoint by default
    header: bool = True
    tfds_keys: tuple[str, str | None] = ("sentence1", "sentence2")
    tfds_labels: tuple[str, ...] | None = None  # tfds' label order when it differs from `labels`
    eval_splits: tuple[str, ...] = ("dev",)


SPECS: dict[str, GlueSpec] = {
    "cola": GlueSpec("cola", (3, None, 1), BINARY, ("mcc", "accuracy"), header=False, tfds_keys=("sentence", None)),
    "sst2": GlueSpec("sst2", ("sentence", None, "label"), BINARY, ("accuracy",), tfds_keys=("sentence", None)),
    "mrpc": GlueSpec("mrpc", ("#1 String", "#2 String", "Quality"), BINARY, ("f1", "accuracy")),
    "stsb": GlueSpec("stsb", ("sentence1", "sentence2", "score"), None, ("pearson", "spearman")),
    "qqp": GlueSpec("qqp", ("question1", "question2", "is_duplicate"), BINARY, ("f1", "accuracy"), tfds_keys=QQP_KEYS),
    "mnli": GlueSpec(
        "mnli",
        ("sentence1", "sentence2", "gold_label"),
        ("contradiction", "entailment", "neutral"),
        ("accuracy",),
        tfds_keys=("premise", "hypothesis"),
        tfds_labels=("entailment", "neutral", "contradiction"),
        eval_splits=("dev_matched", "dev_mismatched"),
    ),
    "qnli": GlueSpec("qnli", ("question", "sentence", "label"), NLI, ("accuracy",), tfds_keys=("question", "sentence")),
    "rte": GlueSpec("rte", ("sentence1", "sentence2", "label"), NLI, ("accuracy",)),
    "wnli": GlueSpec("wnli", ("sentence1", "sentence2", "label"), BINARY, ("accuracy",)),
}
TFDS_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched"}
TFDS_SPLITS["dev_mismatched"] = "validation_mismatched"
# Each task's folder in the GLUE download (download_glue_data.py), e.g. for multi-task runs over a GLUE root.
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI"}
FOLDERS.update(qnli="QNLI", rte="RTE", wnli="WNLI")


class GlueTask(Task):
    """A GLUE task: classification (or STS-B's regression) on the pooled [CLS] output."""

    spec: GlueSpec

    def __init__(self, config):
        super().__init__(config)
        self.splits = ("train", *self.spec.eval_splits)

    @property
    def num_labels(self) -> int:
        return len(self.spec.labels) if self.spec.labels else 1

    # -- reading -------------------------------------------------------------------------------------------------
    def read(self, split: str) -> list[GlueExample]:
        if split not in self.splits:
            raise ConfigError(f"{self.name} has splits {self.splits}, not {split!r}")
        if self.config.data.source == "tfds":
            return self._read_tfds(split)
        if not self.config.data.dir:
            raise ConfigError(f"{self.name}: pass --config.data.dir=FOLDER with {split}.tsv (GLUE layout)")
        return self._read_tsv(os.path.join(self.config.data.dir, f"{split}.tsv"))

    def _label(self, value: str, where: str) -> int | float:
        if self.spec.labels is None:
            try:
                return float(value)
            except ValueError:
                raise DataError(f"{where}: label {value!r} is not a number; {self.name} scores are floats") from None
        if value not in self.spec.labels:
            raise DataError(
                f"{where}: unknown label {value!r}; {self.name} labels are {list(self.spec.labels)}. "
                f"Fix the line, or check --config.finetune.task matches the data folder"
            )
        return self.spec.labels.index(value)

    def _read_tsv(self, path: str) -> list[GlueExample]:
        if not fileio.isfile(path):
            raise ConfigError(
                f"{path}: no such file; --config.data.dir must be a GLUE task folder (train.tsv, dev.tsv...)"
            )
        with fileio.open(path, encoding="utf-8-sig") as f:  # MRPC's files start with a byte-order mark
            lines = [line.rstrip("\r\n") for line in f]
        columns, first = self.spec.columns, 0
        if self.spec.header:
            names = lines[0].split("\t") if lines else []
            missing = [c for c in columns if c is not None and c not in names]
            if missing:
                raise DataError(
                    f"{path}:1: header {names} lacks column(s) {missing} that {self.name} needs; "
                    f"use the GLUE TSV files of {self.name} (or the task whose columns these are)"
                )
            columns, first = tuple(None if c is None else names.index(c) for c in columns), 1
        examples = []
        for number, line in enumerate(lines[first:], start=first + 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            where = f"{path}:{number}"
            needed = max(c for c in columns if c is not None)
            if len(fields) <= needed:
                raise DataError(
                    f"{where}: {len(fields)} tab-separated column(s), {self.name} needs column {needed + 1} "
                    f"({self.spec.columns}); fix the line (a tab lost or turned into spaces?)"
                )
            a, b, label = (None if c is None else fields[c] for c in columns)
            examples.append(GlueExample(len(examples), a, b, self._label(label, where)))
        return examples

    def _read_tfds(self, split: str) -> list[GlueExample]:
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ConfigError("data.source='tfds' needs `pip install tensorflow-datasets`") from None
        name = f"glue/{self.spec.tfds_name}"
        source = tfds.data_source(name, split=TFDS_SPLITS[split], data_dir=self.config.data.tfds_data_dir or None)
        key_a, key_b = self.spec.tfds_keys
        examples = []
        for i in range(len(source)):
            record = source[i]
            label = record["label"]
            if self.spec.labels is None:
                label = float(label)
            elif int(label) < 0:
                label = None  # tfds marks unlabelled (test) rows with -1
            elif self.spec.tfds_labels:
                label = self.spec.labels.index(self.spec.tfds_labels[int(label)])
            else:
                label = int(label)
            text_b = None if key_b is None else _text(record[key_b])
            examples.append(GlueExample(i, _text(record[key_a]), text_b, label))
        return examples

    # -- model inputs ----------------------------------------------------------------------------------------------
    def featurize(self, examples: Sequence[GlueExample], tokenizer: Tokenizer, max_seq_length: int) -> Features:
        rows = [encode_pair(tokenizer, e.text_a, e.text_b, max_seq_length) for e in examples]
        features = pad_rows(rows, tokenizer.pad_id)
        regression = self.spec.labels is None
        labels = [(0.0 if regression else 0) if e.label is None else e.label for e in examples]
        features.arrays["labels"] = np.asarray(labels, np.float32 if regression else np.int32)
        return features

    # -- training and evaluation -------------------------------------------------------------------------------------
    def loss(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        weights = batch["row_weights"].astype(jnp.float32)
        denominator = jnp.maximum(weights.sum(), 1.0)
        if self.spec.labels is None:
            error = outputs["logits"].astype(jnp.float32) - batch["labels"]
            loss = (error * error * weights).sum() / denominator
            return loss, {"loss": loss}
        loss, metrics = classification_terms(outputs["logits"], batch["labels"], weights, denominator, "cls")
        return loss, {"loss": loss, "accuracy": metrics["cls_accuracy"]}

    def predict(self, outputs: dict[str, np.ndarray], features: Features, examples: Sequence[GlueExample]) -> list:
        logits = np.asarray(outputs["logits"])
        values = logits.astype(float) if self.spec.labels is None else logits.argmax(-1)
        predictions = [None] * len(examples)
        for row, example in enumerate(features.example_index):
            predictions[int(example)] = values[row].item()
        return predictions

    def metrics(self, predictions: list, examples: Sequence[GlueExample]) -> dict[str, float]:
        labels = [e.label for e in examples]
        return {name: getattr(glue_metrics, name)(predictions, labels) for name in self.spec.metrics}

    def write_predictions(self, predictions: list, examples: Sequence[GlueExample], path_prefix: str) -> str:
        """GLUE's submission format: a header, then `index<TAB>prediction` (label strings, or STS-B's score)."""
        path = path_prefix + ".tsv"
        with fileio.open(path, "w", encoding="utf-8") as f:
            f.write("index\tprediction\n")
            for example, p in zip(examples, predictions):
                value = f"{p:.3f}" if self.spec.labels is None else self.spec.labels[p]
                f.write(f"{example.index}\t{value}\n")
        return path


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def encode_pair(tokenizer: Tokenizer, a: str, b: str | None, max_seq_length: int) -> tuple[list[int], list[int]]:
    """Ids and token types of `a` (and `b`) in the tokenizer's layout (`Tokenizer.build_inputs`: BERT's
    `[CLS] a [SEP] b [SEP]`, RoBERTa's `<s> a </s></s> b </s>`), truncated as `transformers` does
    (`truncation="longest_first"`, tests/test_pair_layouts.py)."""
    ids_a = tokenizer.encode(a)
    ids_b = tokenizer.encode(b) if b is not None else None
    budget = max_seq_length - tokenizer.num_special_tokens(pair=ids_b is not None)
    if ids_b is None:
        ids_a = ids_a[:budget]
    else:
        keep_a, keep_b = truncated_pair_lengths(len(ids_a), len(ids_b), budget)
        ids_a, ids_b = ids_a[:keep_a], ids_b[:keep_b]
    ids, types, _ = tokenizer.build_inputs(ids_a, ids_b)
    return ids, types


def truncated_pair_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text a pair keeps within `budget`: the shorter text keeps all of its tokens
    or half the budget, whichever is less (but no less than the longer leaves), the longer the rest.

    This is the fast tokenizers' `longest_first` (transformers 5). BERT's
    `_truncate_seq_pair` (pop from the longer, from b on a tie) differs only
    when both texts pass half an odd budget: it gives a the odd token, this b.
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    shorter = min(len_a, len_b)
    keep = min(shorter, max(budget - max(len_a, len_b), budget // 2))
    return (keep, budget - keep) if len_a <= len_b else (budget - keep, keep)


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Features:
    """Features of (ids, segment ids) rows, padded to the longest row (the trainer re-pads per batch)."""
    lengths = np.asarray([len(ids) for ids, _ in rows], np.int32)
    width = int(lengths.max()) if len(rows) else 1
    input_ids = np.full((len(rows), width), pad_id, np.int32)
    token_type_ids = np.zeros((len(rows), width), np.int32)
    for i, (ids, types) in enumerate(rows):
        input_ids[i, : len(ids)] = ids
        token_type_ids[i, : len(types)] = types
    attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return Features(arrays, np.arange(len(rows)), lengths)


def _glue_class(name: str, spec: GlueSpec) -> type[GlueTask]:
    head = "regression" if spec.labels is None else "classification"
    return type(f"Glue_{name}", (GlueTask,), {"name": name, "spec": spec, "head": head, "__doc__": GlueTask.__doc__})


GLUE_TASKS: dict[str, type[Task]] = {name: _glue_class(name, spec) for name, spec in SPECS.items()}
