"""SQuAD: the official EM/F1 arithmetic on hand-computed cases, token offsets, windows, span decoding, bad offsets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config_finetune import finetune_config
from bert_jax.data.tokenizers import load_tokenizer
from bert_jax.tasks import get_task, squad_eval
from bert_jax.tasks.squad import SpanPrediction, SquadExample, _max_context_windows, _windows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUAD_FILE = "dev-v1.1-articles-00-39.json"
# Articles 37-39 (Kenya, IPCC, Chloroplast): 630 questions, among them the only three of the 40 articles whose first
# gold answer starts inside a word ('h International ...' for 'With International ...', 'r 20% to 25%' for
# 'for 20% to 25%', 'e a third group ...' for 'are a third group ...'): no token span can start mid-word, so decoding
# the labelled tokens gives the whole word and these three miss exact match against all of their gold answers.
SPLIT_AT = 37
MID_WORD_ANSWERS = {"572914f46aef051400154a46", "57291f153f37b31900478046", "5729714daf94a219006aa42d"}


# ---------------------------------------------------------------------------------------------------------------
# The evaluator, on cases computed by hand
# ---------------------------------------------------------------------------------------------------------------


def test_normalize_answer_removes_case_punctuation_articles_and_extra_spaces():
    assert squad_eval.normalize_answer("  An apple,\tthe PEAR;  a plum. ") == "apple pear plum"
    assert squad_eval.normalize_answer("Theater") == "theater"  # 'the' only as a whole word
    assert squad_eval.normalize_answer("rock-'n'-roll") == "rocknroll"  # punctuation removed, not spaced


def test_v1_exact_match_and_f1_by_hand():
    golds = {
        "q1": ["the Eiffel Tower"],  # 'Eiffel tower.' normalises to the same: EM 1, F1 1
        "q2": ["Denver Broncos won"],  # pred tokens broncos won game vs denver broncos won: P = R = 2/3
        "q3": ["Carolina Panthers", "Panthers"],  # 'the Carolina': P 1, R 1/2 -> F1 2/3 against the first
        "q4": ["Santa Clara"],  # no prediction: 0, still counted in the total
    }
    predictions = {"q1": "Eiffel tower.", "q2": "the Broncos won the game", "q3": "the Carolina"}
    scores = squad_eval.evaluate_v1(golds, predictions)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 4)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3 + 0) / 4)
    # Several golds: the best one counts.
    assert squad_eval.evaluate_v1({"q": ["Carolina Panthers", "Panthers"]}, {"q": "panthers"})["exact_match"] == 100


def test_v2_no_answer_scores_breakdown_and_threshold_search_by_hand():
    golds = {"a": ["Normans"], "b": [], "c": [], "d": ["in 1066", "1066"]}
    predictions = {"a": "the Normans", "b": "", "c": "France", "d": "1066 AD"}
    # a: EM 1 F1 1; b: no answer predicted empty: 1, 1; c: answered a no-answer question: 0, 0;
    # d: EM 0, F1 max(P 1/2 R 1/2 -> 1/2, P 1/2 R 1 -> 2/3) = 2/3.
    out = squad_eval.evaluate_v2(golds, predictions)
    assert out["exact"] == pytest.approx(100 * 2 / 4)
    assert out["f1"] == pytest.approx(100 * (1 + 1 + 0 + 2 / 3) / 4)
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == pytest.approx(50.0) and out["NoAns_f1"] == pytest.approx(50.0)
    assert out["HasAns_total"] == 2 and out["NoAns_total"] == 2 and "best_f1" not in out
    # Threshold search: sorted by no-answer score a(.1) d(.3) c(.8) b(.9), starting from the 2 no-answer questions.
    # exact: 2 +1 (a) = 3 at .1, +0 (d), -1 (c answered), +0 (b) -> best 3/4 at .1;
    # f1: 2 +1 = 3 at .1, +2/3 = 11/3 at .3 (best), -1, +0 -> best (11/3)/4 at .3.
    out = squad_eval.evaluate_v2(golds, predictions, na_probs={"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.3})
    assert out["best_exact"] == pytest.approx(75.0) and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == pytest.approx(100 * (11 / 3) / 4) and out["best_f1_thresh"] == 0.3
    # An answer given to a question that has one, but empty: v2's F1 is 0 (one side empty).
    assert squad_eval.compute_f1("Normans", "") == 0 and squad_eval.compute_f1("", "") == 1


# ---------------------------------------------------------------------------------------------------------------
# Real articles: offsets, windows, decode(encode(answer))
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_tokenizer(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True)


def _task(name: str, data_dir: str = "", **finetune):
    return get_task(
        finetune_config(
            name,
            data={"dir": data_dir, "train_file": SQUAD_FILE},
            finetune={"squad_split_articles": SPLIT_AT, **finetune},
        )
    )


@pytest.fixture(scope="module")
def squad_dir(data_dir):
    return os.path.join(data_dir, "squad-v1.1")


def test_wordpiece_offsets_equal_the_fast_tokenizers(tokenizer, squad_dir, minilm_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizerFast(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True)
    examples = _task("squad_v1", squad_dir).read("dev")
    texts = sorted({e.context for e in examples}) + [e.question for e in examples[:200]]
    texts.append("Ça coûte 5€ (naïve) — résumé[MASK]ﬁn İstanbul")  # accents, ligature, literal special token
    for text in texts:
        ids, offsets = tokenizer.encode_with_offsets(text)
        assert ids == tokenizer.encode(text)
        expected = reference(text, add_special_tokens=False, return_offsets_mapping=True)
        assert ids == expected["input_ids"]
        assert offsets == [tuple(o) for o in expected["offset_mapping"]], text


def test_sentencepiece_and_bpe_offsets_give_encodes_ids_and_cover_their_text(data_dir, squad_dir, tmp_path):
    from bert_jax.data.bpe import train_byte_level_bpe

    contexts = sorted({e.context for e in _task("squad_v1", squad_dir).read("dev")})[:40]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(contexts), encoding="utf-8")
    tokenizers = {
        "spiece": load_tokenizer(os.path.join(data_dir, "tokenizers", "xlnet-cased-spiece.model")),
        "bpe": load_tokenizer(train_byte_level_bpe([str(corpus)], 600, str(tmp_path / "bpe"))),
    }
    for name, tok in tokenizers.items():
        for text in contexts:
            ids, offsets = tok.encode_with_offsets(text)
            assert ids == tok.encode(text), name
            assert all(0 <= a < b <= len(text) for a, b in offsets), name
            assert [a for a, _ in offsets] == sorted(a for a, _ in offsets), name
            covered = {i for a, b in offsets for i in range(a, b)}
            assert covered >= {i for i, c in enumerate(text) if not c.isspace()}, name  # nothing left out
            if name == "spiece":  # word-level spans (the fallback): a word's pieces share its span, no space in it
                assert all(" " not in text[a:b] for a, b in offsets)


def test_windows_and_max_context_by_hand():
    # 10 context tokens, 6 per window, stride 3: windows [0, 6), [3, 9), [6, 10) (the last one reaches the end).
    spans = _windows(10, 6, 3)
    assert spans == [(0, 6), (3, 6), (6, 4)]
    # Token 4: min(4, 1) + .06 in both of the first two windows, a tie the first wins; token 5: .06 vs min(2, 3) + .06;
    # token 7: min(4, 1) + .06 = 1.06 vs min(1, 2) + .04 = 1.04; token 8: min(5, 0) + .06 vs min(2, 1) + .04.
    assert list(_max_context_windows(spans, 10)) == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]


def test_windows_cover_every_context_token_once_as_max_context(tokenizer, squad_dir):
    task = _task("squad_v1", squad_dir, doc_stride=32, max_query_length=24)
    examples = task.read("dev")[:150]
    features = task.featurize(examples, tokenizer, 96)
    rows_per_example = np.bincount(features.example_index, minlength=len(examples))
    assert rows_per_example.max() > 3  # the short rows force several windows per context
    for ex_i, example in enumerate(examples):
        rows = np.flatnonzero(features.example_index == ex_i)
        _, context_offsets = tokenizer.encode_with_offsets(example.context)
        seen, max_context = set(), {}
        for row in rows:
            offsets = features.extras["offsets"][row]
            inside = offsets[:, 0] >= 0
            seen |= {tuple(o) for o in offsets[inside]}
            for o in offsets[inside & features.extras["max_context"][row]]:
                max_context[tuple(o)] = max_context.get(tuple(o), 0) + 1
            assert features.lengths[row] <= 96
        assert seen == set(context_offsets)
        assert max_context == dict.fromkeys(context_offsets, 1)  # each token is max-context in exactly one window


@pytest.mark.parametrize("max_seq_length,doc_stride", [(384, 128), (128, 32)])
def test_one_hot_logits_at_the_labels_decode_to_the_gold_answer(tokenizer, squad_dir, max_seq_length, doc_stride):
    task = _task("squad_v1", squad_dir, doc_stride=doc_stride)
    examples = task.read("dev")
    assert len(examples) == 630 and len(task.read("train")) == 8981 - 630
    features = task.featurize(examples, tokenizer, max_seq_length)
    assert features.extras["offset_mismatches"] == [] and features.extras["unmappable_answers"] == []
    labelled = np.zeros(len(examples), bool)
    labelled[features.example_index[features.arrays["start_positions"] > 0]] = True
    assert labelled.all()  # every answer lies whole inside at least one window
    rows = np.arange(len(features))
    start_logits = np.zeros((len(features), max_seq_length), np.float32)
    end_logits = np.zeros_like(start_logits)
    start_logits[rows, features.arrays["start_positions"]] = 1.0
    end_logits[rows, features.arrays["end_positions"]] = 1.0
    predictions = task.predict({"start_logits": start_logits, "end_logits": end_logits}, features, examples)
    missed = {
        p.qid
        for p, e in zip(predictions, examples, strict=True)
        if not any(squad_eval.exact_match_score_v1(p.text, a["text"]) for a in e.answers)
    }
    assert missed == MID_WORD_ANSWERS
    scores = task.metrics(predictions, examples)
    assert scores["exact_match"] == pytest.approx(100 * 627 / 630)
    assert scores["offset_mismatches"] == 0


def test_mismatched_answer_offset_is_counted_and_not_trained_on(tokenizer, squad_dir, tmp_path, caplog):
    with open(os.path.join(squad_dir, SQUAD_FILE), encoding="utf-8") as f:
        article = json.load(f)["data"][2]  # Normans
    article["paragraphs"] = article["paragraphs"][:2]
    qa = article["paragraphs"][0]["qas"][0]
    qa["answers"] = [dict(a, answer_start=a["answer_start"] + 3) for a in qa["answers"]]  # every offset off by 3
    with open(tmp_path / "train.json", "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": [article]}, f)
    task = get_task(finetune_config("squad_v1", data={"dir": str(tmp_path), "dev_file": "train.json"}))
    examples = task.read("dev")
    features = task.featurize(examples, tokenizer, 384)
    assert features.extras["offset_mismatches"] == [qa["id"]]
    assert qa["id"] in caplog.text
    bad = [i for i, e in enumerate(examples) if e.qid == qa["id"]]
    weights = features.arrays["span_weights"]
    assert np.all(weights[np.isin(features.example_index, bad)] == 0)
    assert np.all(weights[~np.isin(features.example_index, bad)] == 1)
    predictions = [SpanPrediction(e.qid, e.answers[0]["text"], 0.0) for e in examples]
    scores = task.metrics(predictions, examples)
    assert scores["offset_mismatches"] == 1
    assert scores["exact_match"] == 100.0  # still predicted and scored against its gold texts


# ---------------------------------------------------------------------------------------------------------------
# Loss and v2 decoding, on small hand-made inputs
# ---------------------------------------------------------------------------------------------------------------


def test_loss_is_the_mean_start_end_cross_entropy_over_real_labelled_rows():
    task = get_task(finetune_config("squad_v1"))
    rng = np.random.default_rng(0)
    start, end = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    batch = {
        "start_positions": np.array([1, 2, 0, 3]),
        "end_positions": np.array([2, 4, 0, 3]),
        "attention_mask": np.array([[1] * 6, [1] * 5 + [0], [1] * 6, [1] * 4 + [0, 0]]),
        "row_weights": np.array([1.0, 1.0, 1.0, 0.0]),  # row 3 fills the batch
        "span_weights": np.array([1.0, 1.0, 0.0, 1.0], np.float32),  # row 2's answer offset did not match
    }

    def cross_entropy(logits, mask, label):
        logits = logits[mask > 0]
        return math.log(np.exp(logits).sum()) - logits[label]

    expected = np.mean(
        [
            0.5 * (cross_entropy(start[r], batch["attention_mask"][r], batch["start_positions"][r])
                   + cross_entropy(end[r], batch["attention_mask"][r], batch["end_positions"][r]))
            for r in (0, 1)
        ]
    )  # fmt: skip
    loss, metrics = task.loss({"start_logits": jnp.asarray(start), "end_logits": jnp.asarray(end)}, batch)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert "start_accuracy" in metrics and "end_accuracy" in metrics


def test_v2_null_threshold_max_answer_length_and_written_files(tokenizer, tmp_path):
    context = "The Normans were in Normandy in the 10th and 11th centuries."
    examples = [
        SquadExample("q1", "t", context, "Where were the Normans?", [{"text": "Normandy", "answer_start": 20}]),
        SquadExample("q2", "t", context, "Who lived on the moon?", [], is_impossible=True),
    ]
    task = get_task(finetune_config("squad_v2", finetune={"max_answer_length": 3}))
    features = task.featurize(examples, tokenizer, 64)
    assert list(features.arrays["start_positions"]) == [features.arrays["end_positions"][0], 0]
    label = int(features.arrays["start_positions"][0])
    start = np.full((2, 64), -10.0, np.float32)
    end = np.full((2, 64), -10.0, np.float32)
    start[0, label], end[0, label] = 3.0, 2.0  # q1: the span 'Normandy' scores 5, the null span 1 + 1 = 2
    start[0, 0] = end[0, 0] = 1.0
    normans = int(np.flatnonzero(features.extras["offsets"][1][:, 0] == context.index("Normans"))[0])
    start[1, 0] = end[1, 0] = 4.0  # q2: null 8; the best span starts at 'normans' (2) ...
    start[1, normans] = 2.0
    end[1, normans + 3] = 5.0  # ... not ending at 'normandy' (4 tokens, over max_answer_length) ...
    end[1, normans + 2] = 1.0  # ... but at 'in': 'Normans were in', 2 + 1 = 3
    predictions = task.predict({"start_logits": start, "end_logits": end}, features, examples)
    assert predictions[0] == SpanPrediction("q1", "Normandy", pytest.approx(2.0 - 5.0))
    assert predictions[1] == SpanPrediction("q2", "", pytest.approx(8.0 - 3.0))
    scores = task.metrics(predictions, examples)
    assert scores["exact_match"] == 100.0 and scores["has_ans_total"] == 1 and scores["no_ans_total"] == 1
    path = task.write_predictions(predictions, examples, str(tmp_path / "predictions"))
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"q1": "Normandy", "q2": ""}
    with open(tmp_path / "null_odds.json", encoding="utf-8") as f:
        assert json.load(f) == pytest.approx({"q1": -3.0, "q2": 5.0})


def test_v1_reader_rejects_unanswerable_questions(tmp_path):
    qa = {"id": "x", "question": "q?", "answers": [], "is_impossible": True}
    data = {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [qa]}]}]}
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="squad_v2"):
        get_task(finetune_config("squad_v1", data={"dir": str(tmp_path)})).read("dev")
    assert get_task(finetune_config("squad_v2", data={"dir": str(tmp_path), "dev_file": "dev-v1.1.json"})).read("dev")


# ---------------------------------------------------------------------------------------------------------------
# The command end to end, on a tiny random model
# ---------------------------------------------------------------------------------------------------------------


def _run_command(config: str, workdir, data_dir: str, vocab: str, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "bert_jax.main", f"--config=configs/finetune/{config}.py", f"--workdir={workdir}",
        f"--config.data.dir={data_dir}", f"--config.tokenizer.path={vocab}", "--config.model.vocab_size=30522",
        "--config.model.hidden_size=32", "--config.model.embedding_size=32", "--config.model.num_layers=1",
        "--config.model.num_heads=2", "--config.model.intermediate_size=64", "--config.total_steps=3",
        "--config.batch_size=4", "--config.max_seq_length=64", "--config.finetune.doc_stride=32",
        "--config.finetune.max_query_length=16", "--config.finetune.max_train_examples=16",
        "--config.finetune.max_eval_examples=12", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "eval_results.json"), encoding="utf-8") as f:
        return json.load(f)


def test_squad_v1_command_writes_official_metrics_of_its_predictions(tmp_path, squad_dir, minilm_dir):
    split = ("--config.data.train_file=" + SQUAD_FILE, f"--config.finetune.squad_split_articles={SPLIT_AT}")
    results = _run_command("squad_v1", tmp_path, squad_dir, os.path.join(minilm_dir, "vocab.txt"), *split)
    assert set(results) == {"exact_match", "f1", "offset_mismatches"}
    with open(tmp_path / "predictions.json", encoding="utf-8") as f:
        predictions = json.load(f)
    assert len(predictions) == 12
    golds = {e.qid: [a["text"] for a in e.answers] for e in _task("squad_v1", squad_dir).read("dev")}
    expected = squad_eval.evaluate_v1({q: golds[q] for q in predictions}, predictions)
    assert results["exact_match"] == pytest.approx(expected["exact_match"])
    assert results["f1"] == pytest.approx(expected["f1"])
    contexts = {e.qid: e.context for e in _task("squad_v1", squad_dir).read("dev")}
    assert all(text in contexts[q] for q, text in predictions.items())  # spans cut from the original context
