"""SQuAD exact match and F1, computed as the official `evaluate-v1.1.py` and `evaluate-v2.0.py` compute them.

Papers report these two scripts' numbers, so the arithmetic is theirs,
including where the two versions differ: v1.1 scores a missing prediction 0
and counts it in the total, v2.0 leaves it out of the total; v1.1 takes every
gold text as given, v2.0 drops golds that normalise to nothing and scores a
question without answer 1 only for an empty prediction; v2.0 F1 between an
empty and a non-empty answer is 0. `evaluate_v2` returns the official keys
(`exact`, `f1`, `HasAns_exact`, ..., `best_f1_thresh`); `SquadTask.metrics`
renames them to the lower-case names of eval_results.json.

Inputs are `{question id: [gold answer texts]}` (empty list: no answer) and
`{question id: predicted text}`, the official JSON files' content.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order of steps)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------------------------
# v1.1
# ---------------------------------------------------------------------------------------------------------------


def f1_score_v1(prediction: str, ground_truth: str) -> float:
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def exact_match_score_v1(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def evaluate_v1(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """`{'exact_match', 'f1'}` in [0, 100]: each question's best score over its gold answers, averaged."""
    exact_match = f1 = 0.0
    for qid, ground_truths in golds.items():
        if qid not in predictions:
            continue  # the official script prints "Unanswered question ... will receive score 0"
        prediction = predictions[qid]
        exact_match += max(exact_match_score_v1(prediction, gt) for gt in ground_truths)
        f1 += max(f1_score_v1(prediction, gt) for gt in ground_truths)
    total = len(golds)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ---------------------------------------------------------------------------------------------------------------
# v2.0
# ---------------------------------------------------------------------------------------------------------------


def _get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks, pred_toks = _get_tokens(a_gold), _get_tokens(a_pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)  # no answer: 1 if both are empty, else 0
    return _token_f1(pred_toks, gold_toks)


def _raw_scores(
    golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> tuple[dict[str, int], dict[str, float]]:
    exact_scores, f1_scores = {}, {}
    for qid, texts in golds.items():
        gold_answers = [a for a in texts if normalize_answer(a)] or [""]
        if qid not in predictions:
            continue  # the official script prints "Missing prediction for ..." and leaves it out
        a_pred = predictions[qid]
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def _apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def _make_eval_dict(exact_scores, f1_scores, qid_list=None) -> dict[str, float]:
    if qid_list is None:
        total = len(exact_scores)
        return {
            "exact": 100.0 * sum(exact_scores.values()) / total,
            "f1": 100.0 * sum(f1_scores.values()) / total,
            "total": total,
        }
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
        "total": total,
    }


def _merge_eval(main_eval: dict, new_eval: dict, prefix: str) -> None:
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def _find_best_thresh(preds, scores, na_probs, qid_to_has_ans) -> tuple[float, float]:
    """Sweeps the no-answer threshold over the sorted no-answer scores, as the official script does."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = best_score = num_no_ans
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def evaluate_v2(
    golds: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The dict `evaluate-v2.0.py` prints; with `na_probs` (its --na-prob-file) also the best-threshold search."""
    given_na_probs = na_probs is not None
    na_probs = dict(na_probs) if given_na_probs else dict.fromkeys(predictions, 0.0)
    qid_to_has_ans = {qid: bool(texts) for qid, texts in golds.items()}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = _raw_scores(golds, predictions)
    exact_thresh = _apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = _apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = _make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        _merge_eval(out_eval, _make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        _merge_eval(out_eval, _make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if given_na_probs:
        best_exact, exact_threshold = _find_best_thresh(predictions, exact_raw, na_probs, qid_to_has_ans)
        best_f1, f1_threshold = _find_best_thresh(predictions, f1_raw, na_probs, qid_to_has_ans)
        out_eval.update(
            best_exact=best_exact, best_exact_thresh=exact_threshold, best_f1=best_f1, best_f1_thresh=f1_threshold
        )
    return out_eval
