"""The fine-tuning command end to end on CoNLL-2003 and SWAG layouts, with a tiny random model.

Each run is a few steps of a 1-layer, 32-wide encoder on small synthetic
files, so the scores are near chance; what is checked is that the command
writes `eval_results.json` with the task's metric names and a predictions
file in the task's format, and that the reported metrics are the ones the
predictions file gives (recomputed here from the file, independently of the
run's own bookkeeping). RACE differs from SWAG only in `read`
(tests/test_multiple_choice.py), so it gets no run of its own here: each run
spends most of its ~20-60 s compiling on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys

import pytest

from bert_jax.tasks.seqeval import entity_scores
from tests.test_multiple_choice import SWAG_HEADER, WORDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NER_WORDS = ("john", "smith", "lives", "in", "paris", "france", "and", "works", "for", "acme", "corp", ".")
TAGS = {"john": "B-PER", "smith": "I-PER", "paris": "B-LOC", "france": "B-LOC", "acme": "B-ORG", "corp": "I-ORG"}


def _vocab(folder, words) -> tuple[str, int]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return str(path), len(tokens)


def _run(config: str, workdir, data_dir, vocab: str, vocab_size: int, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "bert_jax.main", f"--config=configs/finetune/{config}.py", f"--workdir={workdir}",
        f"--config.data.dir={data_dir}", f"--config.tokenizer.path={vocab}", f"--config.model.vocab_size={vocab_size}",
        "--config.model.hidden_size=32", "--config.model.embedding_size=32", "--config.model.num_layers=1",
        "--config.model.num_heads=2", "--config.model.intermediate_size=64", "--config.total_steps=4",
        "--config.batch_size=4", "--config.log_every=2", "--config.max_seq_length=48", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "eval_results.json"), encoding="utf-8") as f:
        return json.load(f)


def _write_ner(path, sentences: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(sentences):
        for word in rng.sample(NER_WORDS, rng.randint(3, 8)):
            lines.append(f"{word.capitalize()} NNP I-NP {TAGS.get(word, 'O')}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_conll2003_command(tmp_path):
    data = tmp_path / "conll"
    data.mkdir()
    _write_ner(data / "train.txt", 24, 0)
    _write_ner(data / "dev.txt", 10, 1)
    vocab, size = _vocab(tmp_path, NER_WORDS)
    results = _run("conll2003", tmp_path / "run", data, vocab, size)
    assert set(results) == {"f1", "precision", "recall", "accuracy"}
    gold, predicted, sentence_gold, sentence_predicted = [], [], [], []
    with open(tmp_path / "run" / "predictions.txt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                _, g, p = line.split()
                sentence_gold.append(g)
                sentence_predicted.append(p)
            else:
                gold.append(sentence_gold)
                predicted.append(sentence_predicted)
                sentence_gold, sentence_predicted = [], []
    assert len(gold) == 10
    scores = entity_scores(gold, predicted)
    assert results == pytest.approx({k: 100 * v for k, v in scores.items()}, abs=1e-9)


def _write_swag(path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SWAG_HEADER)
        for i in range(rows):
            endings = [" ".join(rng.sample(WORDS, 4)) for _ in range(4)]
            context = " ".join(rng.sample(WORDS, 6))
            row = [i, "vid", i, context, context, "the man", "gold", *endings, rng.randrange(4)]
            writer.writerow(row)


@pytest.mark.slow
def test_swag_command(tmp_path):
    data = tmp_path / "swag"
    data.mkdir()
    _write_swag(data / "train.csv", 16, 0)
    _write_swag(data / "val.csv", 9, 1)
    with open(data / "val.csv", encoding="utf-8", newline="") as f:
        gold = {r[""]: r["label"] for r in csv.DictReader(f)}
    vocab, size = _vocab(tmp_path, WORDS)
    results = _run("swag", tmp_path / "run", data, vocab, size)
    assert set(results) == {"accuracy"}
    with open(tmp_path / "run" / "predictions.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["id"] for r in rows) == sorted(gold)
    assert all(r["label"] in "0123" for r in rows)
    accuracy = 100.0 * sum(gold[r["id"]] == r["label"] for r in rows) / len(rows)
    assert results["accuracy"] == pytest.approx(accuracy)
