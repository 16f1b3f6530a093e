"""GLUE metrics (bert_jax/tasks/metrics.py) against sklearn / scipy, or hand-computed values without them."""

from __future__ import annotations

import numpy as np
import pytest

from bert_jax.tasks import metrics

PRED = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
GOLD = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]  # tp=4, tn=3, fp=2, fn=1


def test_hand_computed_binary_metrics():
    assert metrics.accuracy(PRED, GOLD) == pytest.approx(70.0)
    assert metrics.f1(PRED, GOLD) == pytest.approx(100 * 2 * 4 / (2 * 4 + 2 + 1))
    assert metrics.mcc(PRED, GOLD) == pytest.approx((4 * 3 - 2 * 1) / np.sqrt(6 * 5 * 5 * 4))
    assert metrics.f1([0, 0], [0, 0]) == 0.0 and metrics.mcc([1, 1], [1, 0]) == 0.0  # sklearn's degenerate cases


def test_hand_computed_correlations():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # ranks [1, 2, 3, 4] and [2, 3.5, 3.5, 1] (ties share their mean rank): -1.5 / sqrt(5 * 4.5)
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 20, 5]) == pytest.approx(-1.5 / np.sqrt(22.5))


def test_against_sklearn_and_scipy():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    assert metrics.f1(p, y) == pytest.approx(100 * sklearn_metrics.f1_score(y, p))
    assert metrics.mcc(p, y) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p))
    assert metrics.accuracy(p, y) == pytest.approx(100 * sklearn_metrics.accuracy_score(y, p))
    a, b = rng.normal(size=300), np.round(rng.normal(size=300), 1)  # rounding makes ties for the ranks
    b = b + 0.5 * a
    assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert metrics.spearman(a, np.round(b)) == pytest.approx(stats.spearmanr(a, np.round(b))[0])
