"""SQuAD v1.1 and v2.0: answer spans over sliding windows of the context, decoded back to text by char offsets.

Featurization follows BERT's `run_squad.py`: each question becomes one row
per window `[CLS] question [SEP] context window [SEP]` (the tokenizer's
layout: RoBERTa's `<s> question </s></s> window </s>`), windows start every
`doc_stride` context tokens until the context's end is covered, and a
window that does not hold the whole answer is labelled with position 0
([CLS], which v2.0 also uses for "no answer"). Decoding takes, over all the
windows of a question, the best start/end pair among each window's
`n_best_size` top starts and ends with end >= start, at most
`max_answer_length` tokens, both inside the context, and the start in the
window where it has the most context on both sides; the text is cut from the
original context through the tokenizer's character offsets (instead of
run_squad.py's re-alignment heuristic). v2.0 predicts "" when the smallest
null score over the windows beats the best span by more than
`null_score_diff_threshold`, and writes that margin to null_odds.json for the
official script's threshold search.

An answer whose `answer_start` does not point at its text is never dropped
silently: it is counted and its question ids are logged, kept in
`Features.extras['offset_mismatches']` and counted in eval_results.json
(`offset_mismatches`). Its question still gets a prediction scored against
the gold texts; its rows get `span_weights` 0, so the loss ignores them,
unless another of its answers is consistent (that one is the label then).

Files: `config.data.dir`/`data.train_file` and `data.dev_file` (default the
official names), or with `finetune.squad_split_articles=N` the first N
articles of the train file for training and its other articles for dev.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import fileio
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import ConfigError, DataError
from bert_jax.objectives.losses import classification_terms
from bert_jax.tasks import squad_eval
from bert_jax.tasks.base import Features, Task

log = logging.getLogger(__name__)

_NO_SPAN_ODDS = 1e9  # null odds of a question whose windows offer no valid span at all


@dataclasses.dataclass
class SquadExample:
    """One question with its context and gold answers (`answers` empty for a v2.0 question without answer)."""

    qid: str
    title: str
    context: str
    question: str
    answers: list[dict]  # {'text': str, 'answer_start': int}, as in the JSON
    is_impossible: bool = False

    def offset_matches(self, answer: dict) -> bool:
        """Whether the answer's `answer_start` points at its text in the context."""
        start, text = answer["answer_start"], answer["text"]
        return bool(text.strip()) and self.context[start : start + len(text)] == text


class SpanPrediction(NamedTuple):
    """A question's predicted answer ('' for no answer) and, for v2.0, null score minus best span score."""

    qid: str
    text: str
    null_odds: float


def read_squad_articles(path: str, version: int) -> list[list[SquadExample]]:
    """The examples of an official SQuAD JSON file, grouped by article."""
    if not fileio.isfile(path):
        raise DataError(
            f"SQuAD file {path!r} does not exist; set --config.data.dir to the folder with the official JSON files "
            "(and data.train_file / data.dev_file to their names)"
        )
    with fileio.open(path, encoding="utf-8") as f:
        try:
            dataset = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"SQuAD file {path!r} is not valid JSON ({e}); pass the official train/dev JSON") from e
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise DataError(f"SQuAD file {path!r} has no 'data' list of articles; pass the official train/dev JSON")
    articles = []
    for article in dataset["data"]:
        examples = []
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                examples.append(_example(path, version, article.get("title", ""), paragraph["context"], qa))
        articles.append(examples)
    return articles


def _example(path: str, version: int, title: str, context: str, qa: dict) -> SquadExample:
    qid = qa.get("id")
    if qid is None or "question" not in qa:
        raise DataError(f"a question in {path!r} (article {title!r}) lacks 'id' or 'question'; fix the file")
    impossible = bool(qa.get("is_impossible", False))
    answers = [] if impossible else list(qa.get("answers", []))
    for answer in answers:
        if "text" not in answer or "answer_start" not in answer:
            raise DataError(f"an answer of question {qid!r} in {path!r} lacks 'text' or 'answer_start'; fix the file")
    if version == 1 and not answers:
        raise DataError(
            f"question {qid!r} in {path!r} has no answer; SQuAD v1.1 questions all have one "
            "(a v2.0 file? use configs/finetune/squad_v2.py)"
        )
    return SquadExample(qid, title, context, qa["question"], answers, impossible)


def _windows(num_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of each context window, as run_squad.py's doc_spans: every `stride` tokens to the end."""
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, stride)


def _max_context_windows(spans: list[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """For each context token, the window that gives it the most context (run_squad.py's score; ties: first)."""
    scores = np.full((len(spans), max(num_tokens, 1)), -np.inf)
    for i, (start, length) in enumerate(spans):
        position = np.arange(start, start + length)
        scores[i, start : start + length] = np.minimum(position - start, start + length - 1 - position) + 0.01 * length
    return scores.argmax(0)


def _answer_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """First and last context tokens overlapping characters [start, end); None when no token does."""
    covered = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    return (covered[0], covered[-1]) if covered else None


class SquadTask(Task):
    """SQuAD v1.1 (`squad_v1`) and v2.0 (`squad_v2`, unanswerable questions): the span head."""

    head = "span"
    version = 1

    @property
    def _files(self) -> tuple[str, str]:
        default = ("train-v1.1.json", "dev-v1.1.json") if self.version == 1 else ("train-v2.0.json", "dev-v2.0.json")
        data = self.config.data
        return data.get("train_file") or default[0], data.get("dev_file") or default[1]

    def read(self, split: str) -> list[SquadExample]:
        if split not in self.splits:
            raise ConfigError(f"{self.name} has splits {self.splits}, not {split!r}")
        train_file, dev_file = self._files
        directory = self.config.data.dir
        split_at = int(self.config.finetune.get("squad_split_articles", 0))
        if split_at <= 0:
            path = os.path.join(directory, train_file if split == "train" else dev_file)
            return [e for article in read_squad_articles(path, self.version) for e in article]
        articles = read_squad_articles(os.path.join(directory, train_file), self.version)
        if split_at >= len(articles):
            raise ConfigError(
                f"finetune.squad_split_articles={split_at} leaves no dev article: {train_file!r} has "
                f"{len(articles)} articles; use a number below {len(articles)}"
            )
        chosen = articles[:split_at] if split == "train" else articles[split_at:]
        return [e for article in chosen for e in article]

    def featurize(self, examples: Sequence[SquadExample], tokenizer: Tokenizer, max_seq_length: int) -> Features:
        cfg = self.config.finetune
        rows: dict[str, list] = {k: [] for k in ("input_ids", "token_type_ids", "start", "end", "weight")}
        offsets_rows, max_context_rows, example_index, mismatches, unmappable = [], [], [], [], []
        contexts: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
        for ex_i, ex in enumerate(examples):
            query = tokenizer.encode(ex.question)[: cfg.max_query_length]
            max_tokens = max_seq_length - len(query) - tokenizer.num_special_tokens(pair=True)
            if max_tokens <= 0:
                raise ConfigError(
                    f"max_seq_length={max_seq_length} leaves no room for context after a {len(query)}-token "
                    "question; raise max_seq_length or lower finetune.max_query_length"
                )
            if ex.context not in contexts:
                contexts[ex.context] = tokenizer.encode_with_offsets(ex.context)
            context_ids, context_offsets = contexts[ex.context]
            bad = [a for a in ex.answers if not ex.offset_matches(a)]
            if bad:
                mismatches.append(ex.qid)
                log.warning(
                    "question %r: answer_start %d does not point at its text %r; not used as a label",
                    ex.qid, bad[0]["answer_start"], bad[0]["text"],
                )  # fmt: skip
            label, weight = None, 1.0
            if not ex.is_impossible:
                good = [a for a in ex.answers if ex.offset_matches(a)]
                if good:
                    answer_start = good[0]["answer_start"]
                    label = _answer_tokens(context_offsets, answer_start, answer_start + len(good[0]["text"]))
                    if label is None:
                        unmappable.append(ex.qid)
                if label is None:
                    weight = 0.0
            spans = _windows(len(context_ids), max_tokens, cfg.doc_stride)
            best_window = _max_context_windows(spans, len(context_ids))
            for w, (start, length) in enumerate(spans):
                ids, types, prefix = tokenizer.build_inputs(query, context_ids[start : start + length])
                rows["input_ids"].append(ids)
                rows["token_type_ids"].append(types)
                inside = label is not None and start <= label[0] and label[1] < start + length
                rows["start"].append(label[0] - start + prefix if inside else 0)
                rows["end"].append(label[1] - start + prefix if inside else 0)
                rows["weight"].append(weight)
                offsets = np.full((max_seq_length, 2), -1, np.int32)
                offsets[prefix : prefix + length] = context_offsets[start : start + length]
                offsets_rows.append(offsets)
                max_context = np.zeros(max_seq_length, bool)
                max_context[prefix : prefix + length] = best_window[start : start + length] == w
                max_context_rows.append(max_context)
                example_index.append(ex_i)
        if mismatches:
            log.warning("%d of %d questions have an answer whose offset does not match its text", len(mismatches),
                        len(examples))  # fmt: skip
        lengths = np.array([len(ids) for ids in rows["input_ids"]], np.int32)
        input_ids = np.full((len(lengths), max_seq_length), tokenizer.pad_id, np.int32)
        token_type_ids = np.zeros((len(lengths), max_seq_length), np.int32)
        for r, (ids, types) in enumerate(zip(rows["input_ids"], rows["token_type_ids"], strict=True)):
            input_ids[r, : len(ids)] = ids
            token_type_ids[r, : len(types)] = types
        arrays = {
            "input_ids": input_ids,
            "attention_mask": (np.arange(max_seq_length)[None, :] < lengths[:, None]).astype(np.int32),
            "token_type_ids": token_type_ids,
            "start_positions": np.array(rows["start"], np.int32),
            "end_positions": np.array(rows["end"], np.int32),
            "span_weights": np.array(rows["weight"], np.float32),
        }
        extras = {
            "offsets": np.stack(offsets_rows) if offsets_rows else np.zeros((0, max_seq_length, 2), np.int32),
            "max_context": np.stack(max_context_rows) if max_context_rows else np.zeros((0, max_seq_length), bool),
            "offset_mismatches": mismatches,
            "unmappable_answers": unmappable,
        }
        return Features(arrays, np.array(example_index, np.int32), lengths, extras)

    @staticmethod
    def _row_weights(batch: dict[str, jax.Array]) -> jax.Array:
        """1 on real rows whose answer offset matched (or that have no answer), else 0."""
        weights = batch["row_weights"].astype(jnp.float32)
        if "span_weights" in batch:
            weights = weights * batch["span_weights"].astype(jnp.float32)
        return weights

    def loss_weight(self, batch: dict[str, jax.Array]) -> jax.Array:
        """The rows `loss` averages over: real rows with a usable label."""
        return self._row_weights(batch).sum()

    def loss(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        """Mean of the start and end cross-entropies over real rows with a usable label."""
        weights = self._row_weights(batch)
        denominator = jnp.maximum(weights.sum(), 1.0)
        padding = batch["attention_mask"] == 0
        terms = {}
        for side in ("start", "end"):
            logits = jnp.where(padding, -1e9, outputs[f"{side}_logits"].astype(jnp.float32))
            terms[side] = classification_terms(logits, batch[f"{side}_positions"], weights, denominator, side)
        loss = 0.5 * (terms["start"][0] + terms["end"][0])
        return loss, {f"{self.name}_loss": loss, **terms["start"][1], **terms["end"][1]}

    def predict(
        self, outputs: dict[str, np.ndarray], features: Features, examples: Sequence[SquadExample]
    ) -> list[SpanPrediction]:
        cfg = self.config.finetune
        start_logits = np.asarray(outputs["start_logits"], np.float32)
        end_logits = np.asarray(outputs["end_logits"], np.float32)
        rows_of: list[list[int]] = [[] for _ in examples]
        for row, ex_i in enumerate(features.example_index):
            rows_of[ex_i].append(row)
        predictions = []
        for ex, rows in zip(examples, rows_of, strict=True):
            best_score, best_text, null_score = -np.inf, "", np.inf
            for row in rows:
                length = min(int(features.lengths[row]), start_logits.shape[1])
                starts, ends = start_logits[row, :length], end_logits[row, :length]
                null_score = min(null_score, float(starts[0] + ends[0]))
                offsets, max_context = features.extras["offsets"][row], features.extras["max_context"][row]
                top_starts = np.argsort(-starts, kind="stable")[: cfg.n_best_size]
                top_ends = np.argsort(-ends, kind="stable")[: cfg.n_best_size]
                for i in top_starts:
                    if offsets[i, 0] < 0 or not max_context[i]:
                        continue
                    for j in top_ends:
                        if offsets[j, 0] < 0 or j < i or j - i + 1 > cfg.max_answer_length:
                            continue
                        score = float(starts[i] + ends[j])
                        if score > best_score:
                            best_score, best_text = score, ex.context[offsets[i, 0] : offsets[j, 1]].strip()
            if self.version == 1:
                predictions.append(SpanPrediction(ex.qid, best_text, 0.0))
                continue
            odds = null_score - best_score if np.isfinite(best_score) else _NO_SPAN_ODDS
            text = "" if odds > cfg.null_score_diff_threshold else best_text
            predictions.append(SpanPrediction(ex.qid, text, float(odds)))
        return predictions

    def metrics(self, predictions: list[SpanPrediction], examples: Sequence[SquadExample]) -> dict[str, float]:
        """v1.1: exact_match, f1. v2.0: those, the has/no-answer breakdown, and the best-threshold search."""
        golds = {ex.qid: [a["text"] for a in ex.answers] for ex in examples}
        texts = {p.qid: p.text for p in predictions}
        mismatches = sum(any(not ex.offset_matches(a) for a in ex.answers) for ex in examples)
        if self.version == 1:
            return {**squad_eval.evaluate_v1(golds, texts), "offset_mismatches": mismatches}
        official = squad_eval.evaluate_v2(golds, texts)
        search = squad_eval.evaluate_v2(golds, texts, na_probs={p.qid: p.null_odds for p in predictions})
        out = {"exact_match": official["exact"], "f1": official["f1"], "total": official["total"]}
        for prefix, name in (("HasAns", "has_ans"), ("NoAns", "no_ans")):
            if f"{prefix}_total" in official:
                out[f"{name}_exact_match"] = official[f"{prefix}_exact"]
                out[f"{name}_f1"] = official[f"{prefix}_f1"]
                out[f"{name}_total"] = official[f"{prefix}_total"]
        out.update(
            best_exact_match=search["best_exact"],
            best_exact_match_thresh=search["best_exact_thresh"],
            best_f1=search["best_f1"],
            best_f1_thresh=search["best_f1_thresh"],
            offset_mismatches=mismatches,
        )
        return out

    def write_predictions(
        self, predictions: list[SpanPrediction], examples: Sequence[SquadExample], path_prefix: str
    ) -> str:
        """`{qid: text}` as the official script reads it (`PREFIX.json`); v2.0 also `{qid: null odds}` beside it."""
        path = path_prefix + ".json"
        with fileio.open(path, "w", encoding="utf-8") as f:
            json.dump({p.qid: p.text for p in predictions}, f, indent=1, ensure_ascii=False)
        if self.version == 2:
            directory, base = os.path.split(path_prefix)
            odds_base = base.replace("predictions", "null_odds") if "predictions" in base else base + "_null_odds"
            with fileio.open(os.path.join(directory, odds_base + ".json"), "w", encoding="utf-8") as f:
                json.dump({p.qid: p.null_odds for p in predictions}, f, indent=1)
        return path


class SquadV1Task(SquadTask):
    name = "squad_v1"
    version = 1


class SquadV2Task(SquadTask):
    name = "squad_v2"
    version = 2


SQUAD_TASKS: dict[str, type[Task]] = {"squad_v1": SquadV1Task, "squad_v2": SquadV2Task}
