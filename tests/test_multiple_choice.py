"""Multiple choice on SWAG's CSV layout and RACE's JSON layout: reading, [rows, choices, length] features, scoring."""

from __future__ import annotations

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config_finetune import finetune_config
from bert_jax.data.tokenizers import WordPieceTokenizer
from bert_jax.errors import DataError
from bert_jax.tasks import get_task

# The official rowanz/swagaf CSV header: pandas' unnamed index column first.
SWAG_HEADER = [
    "", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
    "ending0", "ending1", "ending2", "ending3", "label",
]  # fmt: skip
SWAG_ROWS = [
    ["7", "anetv_a", "101", "The man opens the door. He", "The man opens the door.", "He", "gold",
     "walks in.", "eats the door.", "flies away, slowly.", "sings to a cat.", "0"],
    ["8", "lsmdc_b", "102", "A dog runs. It", "A dog runs.", "It", "gen",
     "sleeps on the sky.", "barks at the man.", "reads a book.", "opens the door.", "1"],
    ["9", "lsmdc_c", "103", "She sits. She", "She sits.", "She", "gold",
     "is a door.", "runs up the sky.", "eats.", "reads a book.", "3"],
]  # fmt: skip
VOCABULARY = (
    "the man opens door . he walks in eats flies away , slowly sings to a cat dog runs it sleeps on sky barks at "
    "reads book she sits is up what did do ? where go school went"
)
WORDS = VOCABULARY.split()


def _tokenizer(tmp_path) -> WordPieceTokenizer:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return WordPieceTokenizer(str(path))


def _task(name: str, folder) -> object:
    return get_task(finetune_config(name, data={"dir": str(folder)}))


def _write_swag(folder, rows=SWAG_ROWS, header=SWAG_HEADER, name="val.csv"):
    with open(folder / name, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _write_race(folder, split="dev"):
    records = {
        "high/1.txt": {
            "id": "high1.txt",
            "article": "The man opens the door. He walks in.",
            "questions": ["What did the man do ?", "The man went to _ ."],
            "options": [["eats", "walks in", "sings", "flies"], ["school", "the sky", "a book", "the door"]],
            "answers": ["B", "D"],
        },
        "middle/2.txt": {
            "id": "middle2.txt",
            "article": "A dog runs. It barks at the man.",
            "questions": ["Where did the dog go ?"],
            "options": [["up", "to the man", "to school", "away"]],
            "answers": ["B"],
        },
    }
    for name, record in records.items():
        path = folder / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


def test_swag_reading_and_features(tmp_path):
    _write_swag(tmp_path)
    task = _task("swag", tmp_path)
    examples = task.read("dev")
    assert [e.id for e in examples] == ["7", "8", "9"]
    assert [e.label for e in examples] == [0, 1, 3]
    assert examples[0].context == "The man opens the door."
    assert examples[0].choices[2] == "He flies away, slowly."  # sent2 + ' ' + ending, as run_swag builds it
    tokenizer = _tokenizer(tmp_path)
    features = task.featurize(examples, tokenizer, 32)
    ids = features.arrays["input_ids"]
    assert ids.shape == features.arrays["attention_mask"].shape == features.arrays["token_type_ids"].shape
    assert ids.shape[:2] == (3, 4)
    assert features.arrays["labels"].tolist() == [0, 1, 3]
    assert features.example_index.tolist() == [0, 1, 2]
    row = ids[0, 2][features.arrays["attention_mask"][0, 2] > 0]
    assert tokenizer.decode(row) == "[CLS] the man opens the door . [SEP] he flies away , slowly . [SEP]"
    types = features.arrays["token_type_ids"][0, 2][: len(row)]
    assert types.tolist() == [0] * 8 + [1] * 7
    lengths = features.arrays["attention_mask"].sum(-1).max(-1)
    assert features.lengths.tolist() == lengths.tolist()


def test_race_reading_blank_filling_and_truncation(tmp_path):
    _write_race(tmp_path)
    task = _task("race", tmp_path)
    examples = task.read("dev")
    assert [e.id for e in examples] == ["high1.txt-0", "high1.txt-1", "middle2.txt-0"]
    assert [e.label for e in examples] == [1, 3, 1]
    assert examples[0].choices[1] == "What did the man do ? walks in"  # no blank: the option follows the question
    assert examples[1].choices[0] == "The man went to school ."  # the option fills the '_' blank
    tokenizer = _tokenizer(tmp_path)
    # 10 article + 6 question tokens do not fit in 16 - 3: the longer side, the article, is cut first.
    features = task.featurize(examples, tokenizer, 16)
    assert features.arrays["input_ids"].shape == (3, 4, 16)
    row = features.arrays["input_ids"][1, 0]
    assert tokenizer.decode(row) == "[CLS] the man opens the door . he [SEP] the man went to school . [SEP]"


@pytest.mark.parametrize("name", ["swag", "race"])
def test_round_trip_accuracy_and_predictions_file(tmp_path, name):
    (_write_swag if name == "swag" else _write_race)(tmp_path)
    task = _task(name, tmp_path)
    examples = task.read("dev")
    features = task.featurize(examples, _tokenizer(tmp_path), 32)
    labels = features.arrays["labels"]
    one_hot = np.eye(4, dtype=np.float32)[labels]
    predictions = task.predict({"logits": one_hot}, features, examples)
    assert predictions == [e.label for e in examples]
    assert task.metrics(predictions, examples) == {"accuracy": 100.0}
    wrong = task.predict({"logits": np.eye(4, dtype=np.float32)[(labels + 1) % 4]}, features, examples)
    assert task.metrics(wrong, examples) == {"accuracy": 0.0}
    mixed = [*predictions[:-1], wrong[-1]]
    assert task.metrics(mixed, examples)["accuracy"] == pytest.approx(100.0 * 2 / 3)
    path = task.write_predictions(mixed, examples, str(tmp_path / "predictions"))
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    expected = {
        "swag": [["id", "label"], ["7", "0"], ["8", "1"], ["9", "0"]],
        "race": [["id", "label"], ["high1.txt-0", "B"], ["high1.txt-1", "D"], ["middle2.txt-0", "C"]],
    }
    assert rows == expected[name]


@pytest.mark.parametrize("name", ["swag", "race"])
def test_loss_is_cross_entropy_over_choices_of_real_rows(name):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 3, 2, 1, 1], np.int32)
    row_weights = np.array([1, 1, 1, 1, 0], np.float32)
    task = get_task(finetune_config(name))
    batch = {"labels": jnp.asarray(labels), "row_weights": jnp.asarray(row_weights)}
    loss, metrics = task.loss({"logits": jnp.asarray(logits)}, batch)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_probs[np.arange(4), labels[:4]].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx((logits.argmax(-1) == labels)[:4].mean())


def test_bad_input_names_the_problem(tmp_path):
    _write_swag(tmp_path, header=[h for h in SWAG_HEADER if h != "ending3"], rows=[r[:-2] + r[-1:] for r in SWAG_ROWS])
    with pytest.raises(DataError, match=r"val.csv: missing columns \['ending3'\]"):
        _task("swag", tmp_path).read("dev")
    _write_swag(tmp_path, rows=[SWAG_ROWS[0][:-1] + ["4"]])
    with pytest.raises(DataError, match=r"val.csv:2: unknown label '4'; known labels are \['0', '1', '2', '3'\]"):
        _task("swag", tmp_path).read("dev")
    with pytest.raises(DataError, match="no SWAG train file"):
        _task("swag", tmp_path).read("train")
    _write_race(tmp_path, "train")
    bad = tmp_path / "train" / "high" / "1.txt"
    record = json.loads(bad.read_text())
    record["answers"][1] = "E"
    bad.write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"1.txt: question 1: unknown label 'E'"):
        _task("race", tmp_path).read("train")
    with pytest.raises(DataError, match="no RACE test files"):
        _task("race", tmp_path).read("test")
