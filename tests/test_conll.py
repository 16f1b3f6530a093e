"""CoNLL-2003 NER: seqeval-equivalent entity scores, reading the real files, first-subword alignment, the loss."""

from __future__ import annotations

import os
import random
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config_finetune import finetune_config
from bert_jax.data.tokenizers import WordPieceTokenizer
from bert_jax.errors import DataError
from bert_jax.tasks import get_task
from bert_jax.tasks.conll import CONLL2003_LABELS, IGNORE, ConllTask, Sentence
from bert_jax.tasks.seqeval import entity_scores, get_entities


def _task(data: str = "") -> ConllTask:
    return get_task(finetune_config("conll2003", data={"dir": data}))


# ---- entity-level scores -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, entities",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),  # IOB2
        (["I-PER", "I-PER", "O", "I-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),  # IOB1: I- after O opens an entity
        (["O", "I-ORG", "I-ORG"], [("ORG", 1, 2)]),
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),  # a type change ends one, starts another
        (["I-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),  # IOB1: B- splits two entities of one type
        (["B-MISC", "B-MISC"], [("MISC", 0, 0), ("MISC", 1, 1)]),
        (["O", "O"], []),
    ],
)
def test_entities_by_hand(tags, entities):
    assert get_entities([tags]) == entities


def test_entities_never_cross_sentences():
    # seqeval joins sentences with an 'O' between them: positions count it, and the I-PER opens a new entity.
    assert get_entities([["B-PER", "I-PER"], ["I-PER"]]) == [("PER", 0, 1), ("PER", 3, 3)]


def test_scores_by_hand():
    gold = [["B-ORG", "I-ORG", "O", "B-PER"], ["B-LOC"]]
    predicted = [["B-ORG", "O", "O", "B-PER"], ["I-LOC"]]  # ORG cut short (wrong); PER right; IOB1 LOC right
    scores = entity_scores(gold, predicted)
    assert scores == pytest.approx({"f1": 2 / 3, "precision": 2 / 3, "recall": 2 / 3, "accuracy": 3 / 5})
    # 1 of 2 predicted entities right, 1 of 3 gold found: P = 1/2, R = 1/3, F1 = 2PR / (P + R) = 2/5.
    scores = entity_scores(gold, [["B-ORG", "I-ORG", "O", "B-LOC"], ["O"]])
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 / 5)
    assert entity_scores(gold, [["O"] * 4, ["O"]])["f1"] == 0.0  # no predicted entity: 0, not NaN
    with pytest.raises(ValueError, match="sentence 1: 1 gold tags but 2 predicted"):
        entity_scores(gold, [["O"] * 4, ["O", "O"]])


def test_scores_match_seqeval_on_random_tags():
    metrics = pytest.importorskip("seqeval.metrics", reason="pip install seqeval (test extra)")
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-MISC", "E-PER", "S-LOC", "B"]  # IOB1/IOB2/IOBES, bare
    checked = 0
    for _ in range(500):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 4))]
        predicted = [[rng.choice(tags) for _ in sentence] for sentence in gold]
        ours = entity_scores(gold, predicted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns on undefined scores and bare tags
            reference = {
                "f1": metrics.f1_score(gold, predicted),
                "precision": metrics.precision_score(gold, predicted),
                "recall": metrics.recall_score(gold, predicted),
                "accuracy": metrics.accuracy_score(gold, predicted),
            }
        assert ours == pytest.approx(reference, abs=1e-12), (gold, predicted)
        checked += ours["f1"] > 0
    assert checked > 100  # most cases have entities in common, so the comparison is not all zeros


# ---- reading the files ---------------------------------------------------------------------------------------------


def test_reads_real_conll2003(data_dir):
    task = _task(os.path.join(data_dir, "conll2003"))
    # sentences / tokens measured here, equal to the published CoNLL-2003 statistics (SOURCE.md)
    for split, sentences, tokens in (("train", 14041, 203621), ("dev", 3250, 51362), ("test", 3453, 46435)):
        examples = task.read(split)
        assert len(examples) == sentences
        assert sum(len(e.words) for e in examples) == tokens
        assert all(len(e.words) == len(e.tags) for e in examples)
    train = task.read("train")
    assert {t for e in train for t in e.tags} == set(CONLL2003_LABELS)
    begins = [t for e in train for t in e.tags if t.startswith("B-")]
    assert {k: begins.count("B-" + k) for k in ("LOC", "MISC", "ORG", "PER")} == {
        "LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600,
    }  # fmt: skip
    assert train[0].words == ("EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", ".")
    assert train[0].tags == ("B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O")


def test_unknown_tag_names_file_line_and_labels(tmp_path):
    (tmp_path / "train.txt").write_text("-DOCSTART- -X- -X- O\n\nEU NNP I-NP B-ORG\nrejects VBZ I-VP B-FOO\n")
    with pytest.raises(DataError) as error:
        _task(str(tmp_path)).read("train")
    message = str(error.value)
    assert f"{tmp_path / 'train.txt'}:4" in message
    assert "'B-FOO'" in message and "'I-MISC'" in message
    with pytest.raises(DataError, match="no dev file"):
        _task(str(tmp_path)).read("dev")


# ---- first-subword alignment ---------------------------------------------------------------------------------------


def _vocab(tmp_path, words) -> WordPieceTokenizer:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return WordPieceTokenizer(str(path))


def test_first_subword_labels(tmp_path):
    tokenizer = _vocab(tmp_path, ["john", "lives", "in", "new", "york", "##shire", "."])
    task = _task()
    sentence = Sentence(("John", "lives", "in", "Yorkshire", "."), ("B-PER", "O", "O", "B-LOC", "O"))
    features = task.featurize([sentence], tokenizer, 16)
    tokens = tokenizer.convert_ids_to_tokens(features.arrays["input_ids"][0, : features.lengths[0]])
    assert tokens == ["[CLS]", "john", "lives", "in", "york", "##shire", ".", "[SEP]"]
    label = CONLL2003_LABELS.index
    expected = [IGNORE, label("B-PER"), label("O"), label("O"), label("B-LOC"), IGNORE, label("O"), IGNORE]
    assert features.arrays["labels"][0].tolist() == expected
    assert features.extras["word_ids"][0].tolist() == [-1, 0, 1, 2, 3, -1, 4, -1]


def _one_hot_logits(features, num_labels: int, seed: int = 0) -> np.ndarray:
    """Logits whose argmax is the gold label at labelled positions and a random wrong-ish label elsewhere."""
    rng = np.random.default_rng(seed)
    labels = features.arrays["labels"]
    fill = np.where(labels == IGNORE, rng.integers(0, num_labels, labels.shape), labels)
    return np.eye(num_labels, dtype=np.float32)[fill] * 5.0


def test_alignment_round_trip_on_real_dev(data_dir, tmp_path):
    task = _task(os.path.join(data_dir, "conll2003"))
    tokenizer = WordPieceTokenizer(os.path.join(data_dir, "tokenizers", "bert-base-uncased-vocab.txt"))
    examples = task.read("dev")[:600]
    max_len = 32  # short, so that many sentences are split into several rows
    features = task.featurize(examples, tokenizer, max_len)
    pieces = [sum(len(tokenizer.encode(" " + w)) for w in e.words) for e in examples]
    expected_split = sum(n > max_len - 2 for n in pieces)
    assert expected_split > 20
    assert features.extras["split_sentences"] == expected_split
    assert features.extras["truncated_words"] == 0
    assert len(features) > len(examples)
    assert features.lengths.max() <= max_len
    assert (features.arrays["labels"] != IGNORE).sum() == sum(len(e.words) for e in examples)
    predictions = task.predict({"logits": _one_hot_logits(features, task.num_labels)}, features, examples)
    assert predictions == [list(e.tags) for e in examples]
    metrics = task.metrics(predictions, examples)
    assert metrics == {"f1": 100.0, "precision": 100.0, "recall": 100.0, "accuracy": 100.0}
    path = task.write_predictions(predictions, examples, str(tmp_path / "predictions"))
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    assert blocks[0].splitlines()[:2] == ["CRICKET O O", "- O O"]
    assert len(blocks) == len(examples) + 1 and blocks[-1] == ""


def test_word_longer_than_a_row_is_truncated_and_counted(tmp_path):
    tokenizer = _vocab(tmp_path, ["a", "##a", "b"])
    sentence = Sentence(("aaaaaa", "b"), ("B-ORG", "O"))
    features = _task().featurize([sentence], tokenizer, 5)  # 3 pieces per row; 'aaaaaa' has 6
    assert features.extras["truncated_words"] == 1
    assert features.extras["split_sentences"] == 1
    assert len(features) == 2
    assert tokenizer.convert_ids_to_tokens(features.arrays["input_ids"][0]) == ["[CLS]", "a", "##a", "##a", "[SEP]"]
    predicted = _task().predict({"logits": _one_hot_logits(features, 9)}, features, [sentence])
    assert predicted == [["B-ORG", "O"]]


# ---- the loss ------------------------------------------------------------------------------------------------------


def test_loss_is_cross_entropy_over_labelled_tokens_of_real_rows():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 6, 9)).astype(np.float32)
    labels = rng.integers(0, 9, size=(3, 6)).astype(np.int32)
    labels[:, 0] = IGNORE
    labels[0, 3] = IGNORE
    attention = np.ones((3, 6), np.int32)
    attention[1, 4:] = 0  # padding positions with a label-looking value (0) must not count
    labels[1, 4:] = 0
    row_weights = np.array([1.0, 1.0, 0.0], np.float32)  # the last row fills the batch
    batch = {"labels": labels, "attention_mask": attention, "row_weights": row_weights}
    loss, metrics = _task().loss({"logits": jnp.asarray(logits)}, {k: jnp.asarray(v) for k, v in batch.items()})
    keep = (labels != IGNORE) & (attention > 0) & (row_weights[:, None] > 0)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], -1)[..., 0]
    expected = -picked[keep].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx((logits.argmax(-1) == labels)[keep].mean())
    assert float(_task().loss_weight({k: jnp.asarray(v) for k, v in batch.items()})) == keep.sum() == 7
