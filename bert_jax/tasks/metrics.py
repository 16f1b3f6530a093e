"""GLUE's official metrics in numpy: accuracy, binary F1, Matthews correlation, Pearson and Spearman.

The values follow GLUE's scripts (sklearn's `f1_score`, `matthews_corrcoef`,
scipy's `pearsonr`, `spearmanr`) without depending on either package:
accuracy and F1 in [0, 100] as the leaderboard prints them, MCC and the
correlations in [-1, 1]. Degenerate inputs (no positive predictions, a
constant column) give 0.0 as sklearn does, instead of NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    """Percentage of predictions equal to their label."""
    p, y = np.asarray(predictions), np.asarray(labels)
    return float(100.0 * np.mean(p == y)) if len(y) else 0.0


def f1(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """Binary F1 of the positive class (MRPC and QQP: 1 = paraphrase / duplicate), in [0, 100]."""
    p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp = float(np.sum(p & y))
    denominator = float(np.sum(p) + np.sum(y))
    return 100.0 * 2.0 * tp / denominator if denominator else 0.0


def mcc(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary predictions (CoLA), in [-1, 1]."""
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp, tn = float(np.sum(p & y)), float(np.sum(~p & ~y))
    fp, fn = float(np.sum(p & ~y)), float(np.sum(~p & y))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson's correlation (STS-B), in [-1, 1]; 0.0 when either side is constant."""
    p, y = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
    p, y = p - p.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(p * p) * np.sum(y * y))
    return float(np.sum(p * y) / denominator) if denominator else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank (scipy.stats.rankdata's 'average')."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    ends = np.r_[first[1:], len(x)]
    mean_rank = (first + ends + 1) / 2.0  # mean of 1-based ranks first+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[group]
    return ranks


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman's rank correlation (STS-B): Pearson's of the average ranks."""
    p, y = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
    return pearson(_average_ranks(p), _average_ranks(y))
