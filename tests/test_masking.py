"""Masking statistics: budgets, the 80/10/10 split, whole words, ALBERT's n-gram law, determinism.

Tolerances are statistical: a rate estimated from n Bernoulli draws is
checked to within 5 standard deviations, sqrt(p (1 - p) / n) * 5 (a false
alarm below 1e-6 per check); the seeds are fixed, so the tests are
deterministic anyway and the margin only says that any seed would pass.
Histograms are compared with a chi-square statistic against the 1e-4 critical
value of its degrees of freedom.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bert_jax.objectives.masking import mask_batch, num_to_predict

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = {PAD, CLS, SEP, MASK}
VOCAB = 1000
# chi-square critical values at p = 1e-4 by degrees of freedom (scipy.stats.chi2.isf(1e-4, dof))
CHI2_CRIT = {1: 15.14, 2: 18.42, 3: 21.11, 4: 23.51, 5: 25.74, 6: 27.86}


def five_sigma(p: float, n: int) -> float:
    return 5 * np.sqrt(p * (1 - p) / n)


def random_batch(rows: int = 2000, length: int = 128, seed: int = 0, word_start_prob: float = 0.7):
    """[CLS] A [SEP] B [SEP] pad rows of realistic, varied lengths; words of 1-4 pieces."""
    rng = np.random.default_rng(seed)
    ids = np.full((rows, length), PAD, np.int32)
    starts = np.zeros((rows, length), bool)
    lengths = np.where(rng.random(rows) < 0.6, length, rng.integers(8, length, rows))  # 60% full, as BERT's data
    for r, n in enumerate(lengths):
        sep1 = int(rng.integers(2, n - 2))
        ids[r, 1:n] = rng.integers(5, VOCAB, n - 1)
        ids[r, [0, sep1, n - 1]] = [CLS, SEP, SEP]
        starts[r, 1:n] = rng.random(n - 1) < word_start_prob
        starts[r, [1, sep1 + 1]] = True  # each segment begins with a word
        starts[r, [0, sep1, n - 1]] = False
    return ids, starts


@pytest.fixture(scope="module")
def batch():
    return random_batch()


def run(ids, seed=0, **kw):
    kw = {"vocab_size": VOCAB, "mask_id": MASK, "special_ids": SPECIAL, "max_predictions": 20, **kw}
    return mask_batch(ids, rng=np.random.default_rng(seed), **kw)


def selected_of(out, shape) -> np.ndarray:
    """The [B, L] boolean mask of predicted positions."""
    sel = np.zeros(shape, bool)
    rows, slots = np.nonzero(out["masked_weights"])
    sel[rows, out["masked_positions"][rows, slots]] = True
    return sel


def check_structure(ids, out, max_predictions):
    """Shapes, dtypes, sorted slots, padding slots zero, specials untouched, labels are the originals."""
    b, _ = ids.shape
    pos, lab, w = out["masked_positions"], out["masked_ids"], out["masked_weights"]
    assert pos.shape == lab.shape == w.shape == (b, max_predictions)
    assert (pos.dtype, lab.dtype, w.dtype, out["input_ids"].dtype) == (np.int32, np.int32, np.float32, np.int32)
    real = w > 0
    assert np.all(real[:, :-1] >= real[:, 1:]), "predictions fill the first slots"
    assert np.all(np.diff(pos.astype(np.int64), axis=1)[real[:, 1:]] > 0), "positions ascend"
    assert np.all(pos[~real] == 0) and np.all(lab[~real] == 0)
    sel = selected_of(out, ids.shape)
    assert sel.sum() == real.sum()
    assert not np.isin(ids[sel], list(SPECIAL)).any(), "a special token or padding was masked"
    np.testing.assert_array_equal(out["input_ids"][~sel], ids[~sel])
    rows = np.nonzero(real)[0]
    np.testing.assert_array_equal(lab[real], ids[rows, pos[real]])
    return sel


def test_token_budget_is_berts_exactly(batch):
    ids, _ = batch
    out = run(ids)
    sel = check_structure(ids, out, 20)
    real_tokens = (~np.isin(ids, list(SPECIAL))).sum(1)
    expected = np.minimum(20, np.maximum(1, np.round(real_tokens * 0.15)))
    np.testing.assert_array_equal(sel.sum(1), expected)
    # overall: 15% of real tokens, up to rounding (|error| <= 0.5 per row) and the cap of 20 per row
    uncapped = np.round(real_tokens * 0.15) < 20
    frac = sel[uncapped].sum() / real_tokens[uncapped].sum()
    assert abs(frac - 0.15) < 0.5 * uncapped.sum() / real_tokens[uncapped].sum() + 1e-9


def test_budget_counts_padding_free_tokens_with_pad_id(batch):
    ids, _ = batch
    out = run(ids, pad_id=PAD)
    np.testing.assert_array_equal(
        out["masked_weights"].sum(1), num_to_predict((ids != PAD).sum(1), 0.15, 20)
    )  # BERT's len(tokens): [CLS] and [SEP] counted, never masked
    assert run(ids, mask_rate=0.0)["masked_weights"].sum() == 0


def test_max_predictions_caps_every_row(batch):
    ids, starts = batch
    for scheme in ("token", "whole_word", "ngram"):
        out = run(ids, max_predictions=5, scheme=scheme, word_starts=starts)
        check_structure(ids, out, 5)
        assert out["masked_weights"].sum(1).max() <= 5


def test_80_10_10_split(batch):
    ids, starts = batch
    for scheme in ("token", "whole_word"):
        out = run(ids, seed=1, scheme=scheme, word_starts=starts)
        sel = selected_of(out, ids.shape)
        new, old = out["input_ids"][sel], ids[sel]
        n = sel.sum()
        to_mask, kept = np.mean(new == MASK), np.mean(new == old)
        to_other = np.mean((new != MASK) & (new != old))
        p_other = 0.1 * (1 - 2 / VOCAB)  # a random id may be the original or [MASK] itself
        assert abs(to_mask - (0.8 + 0.1 / VOCAB)) < five_sigma(0.8, n), (scheme, to_mask)
        assert abs(to_other - p_other) < five_sigma(0.1, n), (scheme, to_other)
        assert abs(kept - (0.1 + 0.1 / VOCAB)) < five_sigma(0.1, n), (scheme, kept)
        # random replacements are uniform over the whole vocabulary, as in BERT: mean (V - 1) / 2
        other = new[(new != MASK) & (new != old)]
        assert abs(other.mean() - (VOCAB - 1) / 2) < 5 * VOCAB / np.sqrt(12 * len(other))


def word_violations(sel: np.ndarray, ids: np.ndarray, starts: np.ndarray) -> int:
    """Adjacent pieces of one word (a non-start text token after a text token) masked differently."""
    text = ~np.isin(ids, list(SPECIAL))
    continuation = text[:, 1:] & text[:, :-1] & ~starts[:, 1:]
    return int((continuation & (sel[:, 1:] != sel[:, :-1])).sum())


def test_whole_word_masks_whole_words(batch):
    ids, starts = batch
    out = run(ids, scheme="whole_word", word_starts=starts)
    sel = check_structure(ids, out, 20)
    assert word_violations(sel, ids, starts) == 0
    assert word_violations(selected_of(run(ids, scheme="token"), ids.shape), ids, starts) > 100, "check is vacuous"
    # multi-piece words are masked too, and the greedy skip-and-continue nearly fills the budget, never over it
    masked_continuations = (sel & ~starts).sum()
    assert masked_continuations > 0.2 * sel.sum()
    budget = num_to_predict((~np.isin(ids, list(SPECIAL))).sum(1), 0.15, 20)
    assert np.all(sel.sum(1) <= budget) and sel.sum() > 0.97 * budget.sum()
    assert abs(sel.sum() / (~np.isin(ids, list(SPECIAL))).sum() - 0.15) < 0.01


def test_ngram_units_are_whole_words(batch):
    ids, starts = batch
    sel = check_structure(ids, run(ids, scheme="ngram", word_starts=starts, max_ngram=3), 20)
    assert word_violations(sel, ids, starts) == 0


def run_lengths(sel: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of True in each row."""
    padded = np.pad(sel.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    return np.nonzero(edges == -1)[1] - np.nonzero(edges == 1)[1]


def test_ngram_lengths_follow_one_over_n():
    """Sparse regime (1% masked, long rows): masked runs are the drawn n-grams, so p(n) ∝ 1/n shows directly.

    Runs are single-token words here; two n-grams merging into one run (about
    2% at this density) and the last n-gram of a row shortened to fit the
    budget bias the histogram by a few hundredths, hence the 0.02 allowance
    on top of 5 sigma.
    """
    rows, length, max_ngram = 400, 2048, 3
    ids = np.random.default_rng(3).integers(5, VOCAB, (rows, length)).astype(np.int32)
    out = run(ids, seed=4, scheme="ngram", mask_rate=0.01, max_predictions=64, max_ngram=max_ngram)
    runs = run_lengths(selected_of(out, ids.shape))
    p = 1 / np.arange(1, max_ngram + 1)
    p /= p.sum()
    observed = np.bincount(np.minimum(runs, max_ngram + 1), minlength=max_ngram + 2)[1:] / len(runs)
    assert observed[-1] < 0.01  # runs longer than max_ngram: merges only
    for n in range(max_ngram):
        assert abs(observed[n] - p[n]) < five_sigma(p[n], len(runs)) + 0.02, (observed, p)
    # and not uniform, nor favouring long n-grams: ratios close to 1 : 1/2 : 1/3
    assert observed[0] > 1.7 * observed[1] > 1.7 * 1.2 * observed[2]


def albert_reference(tokens: list[int], starts: list[bool], budget: int, max_ngram: int, rng) -> set[int]:
    """ALBERT's `create_masked_lm_predictions` selection loop, line by line (rng in place of np.random)."""
    cand_indexes: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token in SPECIAL:
            continue
        if cand_indexes and not starts[i]:
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    ngrams = np.arange(1, max_ngram + 1)
    pvals = 1.0 / np.arange(1, max_ngram + 1)
    pvals /= pvals.sum(keepdims=True)
    ngram_indexes = [[cand_indexes[idx : idx + n] for n in ngrams] for idx in range(len(cand_indexes))]
    rng.shuffle(ngram_indexes)
    masked: set[int] = set()
    for cand_index_set in ngram_indexes:
        if len(masked) >= budget:
            break
        k = len(cand_index_set)  # always max_ngram: near the row's end the slices just come out shorter
        n = rng.choice(ngrams[:k], p=pvals[:k] / pvals[:k].sum(keepdims=True))
        index_set = sum(cand_index_set[n - 1], [])
        n -= 1
        while len(masked) + len(index_set) > budget:
            if n == 0:
                break
            index_set = sum(cand_index_set[n - 1], [])
            n -= 1
        if len(masked) + len(index_set) > budget:
            continue
        if any(index in masked for index in index_set):
            continue
        masked.update(index_set)
    return masked


@pytest.mark.parametrize("max_ngram", [1, 3])
def test_matches_albert_reference_in_distribution(batch, max_ngram):
    """Run lengths (in tokens) and predictions per row match a literal port of Google's loop (BERT wwm = n 1)."""
    ids, starts = batch
    ids, starts = ids[:600], starts[:600]
    scheme = "ngram" if max_ngram > 1 else "whole_word"
    ours = selected_of(run(ids, seed=5, scheme=scheme, word_starts=starts, max_ngram=max_ngram), ids.shape)
    budget = num_to_predict((~np.isin(ids, list(SPECIAL))).sum(1), 0.15, 20)
    rng = np.random.default_rng(6)
    ref = np.zeros_like(ours)
    for r in range(len(ids)):
        ref[r, sorted(albert_reference(ids[r].tolist(), starts[r].tolist(), int(budget[r]), max_ngram, rng))] = True
    bins = 6

    def hist(sel):
        return np.bincount(np.minimum(run_lengths(sel), bins), minlength=bins + 1)[1:]

    for a, b in (
        (hist(ours), hist(ref)),
        (np.bincount(budget - ours.sum(1), minlength=4)[:4], np.bincount(budget - ref.sum(1), minlength=4)[:4]),
    ):
        keep = (a + b) > 0
        a, b = a[keep], b[keep]
        k1, k2 = np.sqrt(b.sum() / a.sum()), np.sqrt(a.sum() / b.sum())
        chi2 = np.sum((k1 * a - k2 * b) ** 2 / (a + b))
        assert chi2 < CHI2_CRIT[max(1, len(a) - 1)], (a, b, chi2)


def test_deterministic_per_seed_and_fresh_per_epoch(batch):
    ids, starts = batch
    for scheme in ("token", "whole_word", "ngram"):
        first = run(ids[:200], seed=7, scheme=scheme, word_starts=starts[:200])
        again = run(ids[:200], seed=7, scheme=scheme, word_starts=starts[:200])
        for key in first:
            np.testing.assert_array_equal(first[key], again[key])
        # dynamic masking: the rng of another epoch (or step) masks other positions
        epochs = [
            selected_of(
                mask_batch(
                    ids[:200],
                    rng=np.random.default_rng([11, epoch]),
                    vocab_size=VOCAB,
                    mask_id=MASK,
                    special_ids=SPECIAL,
                    max_predictions=20,
                    scheme=scheme,
                    word_starts=starts[:200],
                ),
                (200, ids.shape[1]),
            )
            for epoch in (0, 1)
        ]
        overlap = (epochs[0] & epochs[1]).sum() / epochs[0].sum()
        assert overlap < 0.3, (scheme, overlap)  # independent 15% masks share about 15% of positions


def test_input_is_not_modified_and_bad_arguments_raise(batch):
    ids, starts = batch
    copy = ids.copy()
    run(ids, scheme="ngram", word_starts=starts)
    np.testing.assert_array_equal(ids, copy)
    with pytest.raises(ValueError, match="scheme"):
        run(ids, scheme="no_such_scheme")
    with pytest.raises(ValueError, match="word_starts"):
        run(ids, scheme="whole_word", word_starts=starts[:, :5])
    with pytest.raises(ValueError, match="replace_probs"):
        run(ids, replace_probs=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="input_ids"):
        run(ids[0])


def test_rows_without_text_predict_nothing():
    ids = np.array([[CLS, SEP, PAD, PAD], [PAD] * 4, [CLS, 7, SEP, PAD]], np.int32)
    for scheme in ("token", "whole_word", "ngram"):
        out = run(ids, scheme=scheme, word_starts=ids > 4)
        np.testing.assert_array_equal(out["masked_weights"].sum(1), [0, 0, 1])
        assert out["masked_positions"][2, 0] == 1


def wikitext_rows(path: str, lines: int = 2000, length: int = 128):
    """Whitespace words of the first non-empty lines, cut into <= 4-character pieces like WordPiece's '##' ones."""
    vocab: dict[str, int] = {}
    rows, starts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            ids, flags = [CLS], [False]
            for word in line.split():
                for k in range(0, len(word), 4):
                    ids.append(vocab.setdefault(word[k : k + 4] if k == 0 else "##" + word[k : k + 4], len(vocab) + 5))
                    flags.append(k == 0)
            ids, flags = ids[: length - 1] + [SEP], flags[: length - 1] + [False]
            rows.append(ids + [PAD] * (length - len(ids)))
            starts.append(flags + [False] * (length - len(flags)))
            if len(rows) == lines:
                break
    return np.array(rows, np.int32), np.array(starts), len(vocab) + 5


def test_rates_on_real_text(data_dir):
    ids, starts, vocab_size = wikitext_rows(os.path.join(data_dir, "wikitext-2", "valid.txt"))
    real = ~np.isin(ids, list(SPECIAL))
    budget = num_to_predict(real.sum(1), 0.15, 20)
    for scheme in ("token", "whole_word", "ngram"):
        out = mask_batch(
            ids,
            rng=np.random.default_rng(8),
            vocab_size=vocab_size,
            mask_id=MASK,
            special_ids=SPECIAL,
            max_predictions=20,
            scheme=scheme,
            word_starts=starts,
        )
        sel = check_structure(ids, out, 20)
        if scheme == "token":
            np.testing.assert_array_equal(sel.sum(1), budget)
        else:
            assert word_violations(sel, ids, starts) == 0
            assert np.all(sel.sum(1) <= budget) and sel.sum() > 0.95 * budget.sum()
        new, n = out["input_ids"][sel], sel.sum()
        assert abs(np.mean(new == MASK) - 0.8) < five_sigma(0.8, n)
        assert abs(np.mean(new == ids[sel]) - 0.1) < five_sigma(0.1, n)
