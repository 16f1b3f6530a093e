"""Named-entity recognition on CoNLL-2003-format files: first-subword labelling, entity-level F1 as seqeval gives.

Files (`config.data.dir`/{train,dev,test}.txt, or the original
eng.train / eng.testa / eng.testb) hold one word per line with its columns
(`word POS chunk NER`; the NER tag is the last column), a blank line
between sentences and `-DOCSTART-` lines between documents. Tags may be
IOB1 (the original release) or IOB2 (the common re-release); the metric
reads both the same way (see tasks/seqeval.py).

Each word's tag goes on its first sub-token; its other sub-tokens, [CLS]
and [SEP] get label -100, which the loss ignores and decoding skips, so
predictions map back to exactly one tag per word (as BERT's paper and the
Hugging Face `run_ner` example do). A sentence whose sub-tokens do not fit
in `max_seq_length` is split at word boundaries into several rows rather
than truncated, so every word gets a prediction; the number of split
sentences is logged and kept in `Features.extras['split_sentences']`. A
single word longer than a whole row keeps only its first sub-tokens
(`extras['truncated_words']`); it is still labelled by its first one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import fileio
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import DataError
from bert_jax.objectives.losses import classification_terms
from bert_jax.tasks import seqeval
from bert_jax.tasks.base import Features, Task
from bert_jax.tasks.glue import pad_rows

log = logging.getLogger(__name__)

IGNORE = -100  # label of sub-tokens that are not the first of a word; ignored by the loss and by decoding
CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")  # HF's order
SPLIT_FILES = {  # the first file that exists is read
    "train": ("train.txt", "eng.train"),
    "dev": ("dev.txt", "valid.txt", "eng.testa"),
    "test": ("test.txt", "eng.testb"),
}


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence: its words, their gold tags, and where it starts (`file:line`, for messages)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    source: str = ""


def read_conll(path: str, labels: Sequence[str]) -> list[Sentence]:
    """The sentences of a CoNLL file; a line with an unknown tag or a single column raises `DataError`."""
    known = set(labels)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if words:
            sentences.append(Sentence(tuple(words), tuple(tags), f"{path}:{start}"))
            words.clear()
            tags.clear()

    with fileio.open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            columns = line.split()
            if not columns or columns[0] == "-DOCSTART-":
                flush()
                continue
            if len(columns) < 2:
                raise DataError(
                    f"{path}:{number}: expected 'word ... tag' columns separated by spaces, got {line.rstrip()!r}"
                )
            if columns[-1] not in known:
                raise DataError(
                    f"{path}:{number}: unknown tag {columns[-1]!r} for word {columns[0]!r}; known tags are "
                    f"{list(labels)} (set finetune.labels to this file's tag set if it uses others)"
                )
            if not words:
                start = number
            words.append(columns[0])
            tags.append(columns[-1])
    flush()
    return sentences


def _pack_words(pieces: list[list[int]], budget: int) -> list[tuple[int, int]]:
    """[first, end) word ranges of consecutive words whose sub-tokens fit in `budget` tokens each."""
    ranges = []
    first, used = 0, 0
    for i, word_pieces in enumerate(pieces):
        if used + len(word_pieces) > budget and i > first:
            ranges.append((first, i))
            first, used = i, 0
        used += len(word_pieces)
    ranges.append((first, len(pieces)))
    return ranges


class ConllTask(Task):
    """CoNLL-2003 NER ('token' head): entity-level F1/precision/recall and token accuracy, in percent."""

    name = "conll2003"
    head = "token"
    default_labels = CONLL2003_LABELS

    @property
    def labels(self) -> tuple[str, ...]:
        """The tag set: `finetune.labels` (comma-separated) when set, else CoNLL-2003's nine tags."""
        custom = self.config.finetune.labels
        return tuple(t.strip() for t in custom.split(",") if t.strip()) if custom else self.default_labels

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def read(self, split: str) -> list[Sentence]:
        folder = self.config.data.dir
        names = SPLIT_FILES.get(split, (f"{split}.txt",))
        for name in names:
            path = os.path.join(folder, name)
            if fileio.isfile(path):
                return read_conll(path, self.labels)
        raise DataError(
            f"no {split} file for {self.name} in data.dir={folder!r}: looked for {list(names)}; "
            "point --config.data.dir at the folder with the CoNLL files"
        )

    def featurize(self, examples: Sequence[Sentence], tokenizer: Tokenizer, max_seq_length: int) -> Features:
        if max_seq_length < 3:
            raise DataError(f"max_seq_length={max_seq_length} leaves no room for a word between [CLS] and [SEP]")
        label_ids = {tag: i for i, tag in enumerate(self.labels)}
        budget = max_seq_length - 2
        rows: list[tuple[list[int], list[int], list[int]]] = []  # ids, labels, word index (-1: no label)
        example_index: list[int] = []
        split_sentences = truncated_words = 0
        for e, sentence in enumerate(examples):
            # A space before the word: byte-level BPE then encodes it as a word inside a sentence ('Ġword'), as
            # transformers does for words given one by one (is_split_into_words); WordPiece and SentencePiece
            # ignore it. A word that encodes to nothing (only control characters) becomes [UNK] so it keeps a label.
            pieces = [tokenizer.encode(" " + word) or [tokenizer.unk_id] for word in sentence.words]
            for i, word_pieces in enumerate(pieces):
                if len(word_pieces) > budget:
                    pieces[i] = word_pieces[:budget]
                    truncated_words += 1
            ranges = _pack_words(pieces, budget)
            split_sentences += len(ranges) > 1
            for first, end in ranges:
                ids, labels, words = [tokenizer.cls_id], [IGNORE], [-1]
                for w in range(first, end):
                    ids.extend(pieces[w])
                    labels.extend([label_ids[sentence.tags[w]]] + [IGNORE] * (len(pieces[w]) - 1))
                    words.extend([w] + [-1] * (len(pieces[w]) - 1))
                rows.append((ids + [tokenizer.sep_id], labels + [IGNORE], words + [-1]))
                example_index.append(e)
        if split_sentences or truncated_words:
            log.info(
                "%s: %d of %d sentences longer than max_seq_length=%d were split into several rows; "
                "%d words longer than a row kept only their first sub-tokens",
                self.name, split_sentences, len(examples), max_seq_length, truncated_words,
            )  # fmt: skip
        features = pad_rows([(ids, [0] * len(ids)) for ids, _, _ in rows], tokenizer.pad_id)
        width = features.arrays["input_ids"].shape[1]

        def pad(column: int, value: int) -> np.ndarray:
            out = np.full((len(rows), width), value, np.int32)
            for r, row in enumerate(rows):
                out[r, : len(row[column])] = row[column]
            return out

        features.arrays["labels"] = pad(1, IGNORE)
        features.example_index = np.array(example_index, np.int32)
        features.extras = {
            "word_ids": pad(2, -1),
            "split_sentences": split_sentences,
            "truncated_words": truncated_words,
        }
        return features

    @staticmethod
    def _token_weights(batch: dict[str, jax.Array]) -> jax.Array:
        """1.0 at the labelled (first sub-token) positions of real rows, 0.0 elsewhere (padding included)."""
        labelled = (batch["labels"] != IGNORE) & (batch["attention_mask"] > 0)
        return labelled.astype(jnp.float32) * batch["row_weights"][:, None].astype(jnp.float32)

    def loss_weight(self, batch: dict[str, jax.Array]) -> jax.Array:
        """The number of labelled tokens in real rows: what `loss` averages over."""
        return self._token_weights(batch).sum()

    def loss(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        """Cross-entropy averaged over the labelled (first sub-token) positions of real rows."""
        labels = batch["labels"]
        weights = self._token_weights(batch)
        safe_labels = jnp.where(labels == IGNORE, 0, labels)
        denominator = jnp.maximum(weights.sum(), 1.0)
        loss, terms = classification_terms(outputs["logits"], safe_labels, weights, denominator, "token")
        return loss, {"loss": loss, "accuracy": terms["token_accuracy"]}

    def predict(
        self, outputs: dict[str, np.ndarray], features: Features, examples: Sequence[Sentence]
    ) -> list[list[str]]:
        """One tag per word: the argmax at each word's first sub-token."""
        predicted_ids = np.asarray(outputs["logits"]).argmax(-1)
        word_ids = features.extras["word_ids"]
        width = min(predicted_ids.shape[1], word_ids.shape[1])
        predictions: list[list[str | None]] = [[None] * len(s.words) for s in examples]
        for row, e in enumerate(features.example_index):
            positions = np.flatnonzero(word_ids[row, :width] >= 0)
            for position in positions:
                predictions[e][word_ids[row, position]] = self.labels[predicted_ids[row, position]]
        for e, tags in enumerate(predictions):
            if None in tags:
                raise ValueError(
                    f"example {e} ({examples[e].source}): word {tags.index(None)} got no prediction; "
                    "the outputs must cover every row of the features"
                )
        return predictions

    def metrics(self, predictions: list[list[str]], examples: Sequence[Sentence]) -> dict[str, float]:
        """seqeval's micro entity F1/precision/recall and token accuracy in percent; F1 first (the best metric)."""
        scores = seqeval.entity_scores([s.tags for s in examples], predictions)
        return {name: 100.0 * value for name, value in scores.items()}

    def write_predictions(self, predictions: list[list[str]], examples: Sequence[Sentence], path_prefix: str) -> str:
        """`word gold predicted` per line, a blank line after each sentence: the input conlleval.pl reads."""
        path = path_prefix + ".txt"
        with fileio.open(path, "w", encoding="utf-8") as f:
            for sentence, tags in zip(examples, predictions, strict=True):
                for word, gold, predicted in zip(sentence.words, sentence.tags, tags, strict=True):
                    f.write(f"{word} {gold} {predicted}\n")
                f.write("\n")
        return path
