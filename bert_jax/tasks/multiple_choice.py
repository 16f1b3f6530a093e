"""Multiple choice ('choice' head): SWAG's CSV layout and RACE's JSON layout, scored by accuracy.

Every choice is encoded as a sentence pair `[CLS] context [SEP] choice
[SEP]` (the tokenizer's layout) with GLUE's `encode_pair` (the longer side
truncated first), so a row's arrays are [num_choices, length]; the model
scores each pair's pooled output and a softmax over the choices gives the
loss.

- SWAG (`config.data.dir`/{train,val,test}.csv, as in rowanz/swagaf): the
  context is `sent1`, each choice is `sent2 + ' ' + endingN` (as the Hugging
  Face `run_swag` example builds them), `label` is 0-3. Example ids are the
  CSV's unnamed first column (its row index) when present.
- RACE (`config.data.dir`/{train,dev,test}/{high,middle}/*.txt, one JSON
  object per file with `article`, `questions`, `options`, `answers` A-D): the
  context is the article, each choice is the question with the option put in
  place of its '_' blank, or appended after it when there is no blank (as the
  RACE baselines and Hugging Face's multiple-choice example do). Example ids
  are `<file id>-<question number>`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import fileio
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import DataError
from bert_jax.objectives.losses import classification_terms
from bert_jax.tasks import metrics as task_metrics
from bert_jax.tasks.base import Features, Task
from bert_jax.tasks.glue import encode_pair, pad_rows


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
    """A context, its candidate continuations (already joined with any question), and the right one (or None)."""

    id: str
    context: str
    choices: tuple[str, ...]
    label: int | None


class MultipleChoiceTask(Task):
    """Shared featurizing, loss, decoding and scoring; subclasses read their layout and name their labels."""

    head = "choice"
    label_names: tuple[str, ...]  # how the data writes choice 0, 1, ... (predictions.csv uses the same)

    def _label(self, value: str, where: str) -> int:
        value = value.strip()
        if value not in self.label_names:
            raise DataError(f"{where}: unknown label {value!r}; known labels are {list(self.label_names)}")
        return self.label_names.index(value)

    def featurize(self, examples: Sequence[ChoiceExample], tokenizer: Tokenizer, max_seq_length: int) -> Features:
        num_choices = {len(e.choices) for e in examples}
        if len(num_choices) > 1:
            raise DataError(f"{self.name}: examples have different numbers of choices {sorted(num_choices)}")
        choices = num_choices.pop() if num_choices else len(self.label_names)
        pairs = [encode_pair(tokenizer, e.context, c, max_seq_length) for e in examples for c in e.choices]
        flat = pad_rows(pairs, tokenizer.pad_id)
        arrays = {k: v.reshape(len(examples), choices, -1) for k, v in flat.arrays.items()}
        arrays["labels"] = np.asarray([-1 if e.label is None else e.label for e in examples], np.int32)
        lengths = flat.lengths.reshape(len(examples), choices).max(-1, initial=0)
        return Features(arrays, np.arange(len(examples)), lengths, {"num_choices": choices})

    def loss(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        """Softmax cross-entropy over each row's choices, averaged over real rows."""
        weights = batch["row_weights"].astype(jnp.float32)
        labels = jnp.maximum(batch["labels"], 0)  # unlabelled (test) rows have -1; they are never trained on
        loss, terms = classification_terms(outputs["logits"], labels, weights, jnp.maximum(weights.sum(), 1.0), "mc")
        return loss, {"loss": loss, "accuracy": terms["mc_accuracy"]}

    def predict(self, outputs: dict[str, np.ndarray], features: Features, examples: Sequence[ChoiceExample]) -> list:
        """The index of the highest-scoring choice of each example."""
        best = np.asarray(outputs["logits"]).argmax(-1)
        predictions: list[int | None] = [None] * len(examples)
        for row, example in enumerate(features.example_index):
            predictions[int(example)] = int(best[row])
        return predictions

    def metrics(self, predictions: list, examples: Sequence[ChoiceExample]) -> dict[str, float]:
        """Accuracy in percent over the examples (all must be labelled)."""
        if any(e.label is None for e in examples):
            raise DataError(f"{self.name}: accuracy needs labelled examples; this split has unlabelled ones")
        return {"accuracy": task_metrics.accuracy(predictions, [e.label for e in examples])}

    def write_predictions(self, predictions: list, examples: Sequence[ChoiceExample], path_prefix: str) -> str:
        """`id,label` CSV with a header, labels written as the data writes them (SWAG 0-3, RACE A-D)."""
        path = path_prefix + ".csv"
        with fileio.open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "label"])
            for example, p in zip(examples, predictions, strict=True):
                writer.writerow([example.id, self.label_names[p]])
        return path


SWAG_FILES = {"train": "train.csv", "dev": "val.csv", "test": "test.csv"}
SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")


class SwagTask(MultipleChoiceTask):
    """SWAG: pick the ending of a video caption among four."""

    name = "swag"
    label_names = ("0", "1", "2", "3")

    def read(self, split: str) -> list[ChoiceExample]:
        path = os.path.join(self.config.data.dir, SWAG_FILES.get(split, f"{split}.csv"))
        if not fileio.isfile(path):
            raise DataError(f"no SWAG {split} file {path!r}; point --config.data.dir at the folder with {SWAG_FILES}")
        with fileio.open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            required = ["sent1", "sent2", *SWAG_ENDINGS] + (["label"] if split != "test" else [])
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(f"{path}: missing columns {missing}; SWAG CSVs have {required} (got {columns})")
            examples = []
            for i, record in enumerate(reader):
                where = f"{path}:{reader.line_num}"
                label = record.get("label")
                example_id = record.get("") or str(i)  # pandas' unnamed index column in the official files
                endings = tuple(f"{record['sent2']} {record[name]}" for name in SWAG_ENDINGS)
                labelled = label is not None and label.strip() != ""
                examples.append(
                    ChoiceExample(example_id, record["sent1"], endings, self._label(label, where) if labelled else None)
                )
        return examples


RACE_LEVELS = ("high", "middle")


class RaceTask(MultipleChoiceTask):
    """RACE: reading comprehension, four options per question about an article."""

    name = "race"
    label_names = ("A", "B", "C", "D")

    def read(self, split: str) -> list[ChoiceExample]:
        folder = os.path.join(self.config.data.dir, split)
        paths = sorted(p for level in RACE_LEVELS for p in fileio.glob(os.path.join(folder, level, "*.txt")))
        if not paths:
            raise DataError(
                f"no RACE {split} files under {folder!r}; expected {split}/high/*.txt and {split}/middle/*.txt"
            )
        return [example for path in paths for example in self._read_file(path)]

    def _read_file(self, path: str) -> list[ChoiceExample]:
        try:
            with fileio.open(path, encoding="utf-8") as f:
                record = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not a RACE JSON file ({e})") from e
        missing = [k for k in ("article", "questions", "options", "answers") if k not in record]
        if missing:
            raise DataError(f"{path}: missing keys {missing}; RACE files have article, questions, options, answers")
        questions, options, answers = record["questions"], record["options"], record["answers"]
        if not len(questions) == len(options) == len(answers):
            raise DataError(
                f"{path}: {len(questions)} questions, {len(options)} option lists and {len(answers)} answers"
            )
        file_id = record.get("id") or os.path.basename(path)
        examples = []
        for q, (question, choices, answer) in enumerate(zip(questions, options, answers, strict=True)):
            if len(choices) != len(self.label_names):
                raise DataError(f"{path}: question {q} has {len(choices)} options; RACE has {len(self.label_names)}")
            joined = tuple(question.replace("_", o) if "_" in question else f"{question} {o}" for o in choices)
            label = self._label(answer, f"{path}: question {q}")
            examples.append(ChoiceExample(f"{file_id}-{q}", record["article"], joined, label))
        return examples
