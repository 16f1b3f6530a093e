"""Masked-LM masking of a batch on the host: BERT's token, Google's whole-word and ALBERT's n-gram schemes.

Masking happens per batch rather than once per dataset so that it can be
dynamic (RoBERTa: a fresh mask every time a row is seen, from an rng keyed by
the step) or static (BERT: the caller reuses one rng per `dupe_factor` copy).
The rules follow Google's `create_masked_lm_predictions` (BERT, and ALBERT's
n-gram variant):

- each row predicts `min(max_predictions, max(1, round(n * mask_rate)))`
  tokens, n being the row's real tokens (see `pad_id`); special tokens and
  padding are never chosen;
- 'token' picks single tokens; 'whole_word' picks whole words (a word is a
  token with `word_starts` True plus the non-start tokens after it), skipping
  a word that would overrun the budget; 'ngram' picks runs of n consecutive
  words with p(n) ∝ 1/n, n <= `max_ngram`, shortened until they fit, never
  overlapping;
- each chosen token independently becomes [MASK] (80%), a random id in
  [0, vocab_size) (10%) or stays itself (10%): BERT decides per token, also
  inside a whole word.

Everything is vectorised over the batch; the word and n-gram schemes loop over
candidate slots (at most L iterations of [B]-sized operations), never over
tokens in Python.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SCHEMES = ("token", "whole_word", "ngram")


def num_to_predict(num_tokens: np.ndarray, mask_rate: float, max_predictions: int) -> np.ndarray:
    """BERT's per-row prediction budget: `min(max_predictions, max(1, round(num_tokens * mask_rate)))`.

    A rate of 0 predicts nothing (BERT returns early there). `np.round`
    rounds halves to even, like Python 3's `round` that BERT uses.
    """
    if mask_rate == 0:
        return np.zeros_like(num_tokens)
    return np.minimum(max_predictions, np.maximum(1, np.round(num_tokens * mask_rate))).astype(num_tokens.dtype)


def _select_tokens(candidates: np.ndarray, budget: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`budget` candidates per row, uniformly without replacement: the row's smallest random keys."""
    keys = rng.random(candidates.shape)
    keys[~candidates] = 2.0  # above every candidate's key
    k = np.minimum(budget, candidates.sum(1))
    kth = np.sort(keys, axis=1)[np.arange(len(k)), np.maximum(k - 1, 0)]
    return candidates & (keys <= np.where(k > 0, kth, -1.0)[:, None])


def _ngram_cdf(max_ngram: int) -> np.ndarray:
    """The CDF of ALBERT's n-gram length law p(n) ∝ 1/n, n = 1..max_ngram."""
    p = 1.0 / np.arange(1, max_ngram + 1)
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0  # exact, so a draw in [0, 1) never passes it
    return cdf


def _select_units(
    candidates: np.ndarray,
    word_starts: np.ndarray | None,
    budget: np.ndarray,
    max_ngram: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Whole words (`max_ngram=1`) or ALBERT n-grams of words, chosen greedily in random order.

    As in ALBERT, every word is a possible n-gram start with its own drawn n
    (an n-gram running past the row's last word is cut there); starts are visited in random order
    until the row's budget is spent; an n-gram that overruns the budget is
    shortened (n-1, ..., 1) and skipped if even one word overruns or if it
    overlaps a chosen one. Words are numbered across [SEP] as ALBERT's
    candidate list is, so an n-gram may end in A and go on in B.
    """
    b, length = candidates.shape
    rows = np.arange(b)
    before = np.zeros_like(candidates)
    before[:, 1:] = candidates[:, :-1]
    # A word starts at a flagged token, or at any text token right after a special one (a leading '##' piece).
    starts = candidates if word_starts is None else candidates & (~before | word_starts)
    num_words = starts.sum(1)
    u = int(num_words.max(initial=0))
    if u == 0:
        return np.zeros_like(candidates)
    word_of = np.cumsum(starts, axis=1) - 1  # [B, L]: the word of each text token
    word_len = np.bincount((rows[:, None] * u + word_of)[candidates], minlength=b * u).reshape(b, u)
    cum = np.zeros((b, u + 1 + max_ngram), np.int64)  # cum[:, s + m] - cum[:, s]: tokens of words s..s+m-1
    np.cumsum(word_len, axis=1, out=cum[:, 1 : u + 1])
    cum[:, u + 1 :] = cum[:, u : u + 1]

    # As in ALBERT, n is drawn from the full law even near the row's end, where the n-gram just comes out shorter.
    ngram = 1 + (rng.random((b, u))[..., None] > _ngram_cdf(max_ngram)).sum(-1)
    keys = rng.random((b, u))
    keys[np.arange(u)[None, :] >= num_words[:, None]] = 2.0
    order = np.argsort(keys, axis=1)

    chosen = np.zeros((b, u + max_ngram), bool)
    total = np.zeros(b, np.int64)
    for j in range(u):
        active = (total < budget) & (j < num_words)
        if not active.any():
            break
        s = order[:, j]
        n = ngram[rows, s]
        base = cum[rows, s]
        fit = np.zeros(b, np.int64)  # the longest n' <= n that fits the budget (lengths grow with n')
        for m in range(1, max_ngram + 1):
            fit += (m <= n) & (total + cum[rows, s + m] - base <= budget)
        overlap = np.zeros(b, bool)
        for m in range(max_ngram):
            overlap |= (m < fit) & chosen[rows, s + m]
        take = active & (fit > 0) & ~overlap
        for m in range(max_ngram):
            hit = take & (m < fit)
            chosen[rows[hit], s[hit] + m] = True
        total += np.where(take, cum[rows, s + fit] - base, 0)
    return candidates & np.take_along_axis(chosen, np.maximum(word_of, 0), axis=1)


def _check_args(ids: np.ndarray, scheme: str, word_starts, mask_rate, max_predictions, max_ngram, replace_probs):
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be a [batch, length] integer array, got {ids.dtype} {ids.shape}")
    if scheme not in SCHEMES:
        raise ValueError(f"masking scheme must be one of {SCHEMES}, got {scheme!r}")
    if word_starts is not None and np.shape(word_starts) != ids.shape:
        raise ValueError(f"word_starts has shape {np.shape(word_starts)}, input_ids {ids.shape}")
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
    if max_predictions < 1 or max_ngram < 1:
        raise ValueError(f"max_predictions and max_ngram must be >= 1, got {max_predictions} and {max_ngram}")
    if len(replace_probs) != 3 or min(replace_probs) < 0 or abs(sum(replace_probs) - 1.0) > 1e-6:
        raise ValueError(
            f"replace_probs ([MASK], random, unchanged) must be 3 probabilities summing to 1: {replace_probs}"
        )


def mask_batch(
    input_ids: np.ndarray,
    *,
    rng: np.random.Generator,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int] | np.ndarray,
    mask_rate: float = 0.15,
    max_predictions: int,
    scheme: str = "token",
    word_starts: np.ndarray | None = None,
    max_ngram: int = 3,
    replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    pad_id: int | None = None,
) -> dict[str, np.ndarray]:
    """Masks a batch `[B, L]` for MLM; the input is not modified.

    Returns `input_ids` (the masked copy, int32), and, with P =
    `max_predictions`, `masked_positions [B, P]` int32 (ascending within a
    row), `masked_ids [B, P]` int32 (the original ids there) and
    `masked_weights [B, P]` float32 (1 for a prediction, 0 for an unused slot,
    whose position and id are 0).

    `special_ids` (must include the padding id) are never masked.
    `replace_probs` are the ([MASK], random id, unchanged) probabilities.
    `word_starts [B, L]` marks word-initial tokens for 'whole_word' and
    'ngram'; without it every token is a word ('whole_word' is then 'token',
    'ngram' spans tokens). The count a row's budget is taken of is its
    non-special tokens, or with `pad_id` its non-padding tokens, [CLS] and
    [SEP] included, which is exactly BERT's `len(tokens)`.
    """
    ids = np.asarray(input_ids)
    _check_args(ids, scheme, word_starts, mask_rate, max_predictions, max_ngram, replace_probs)
    specials = special_ids if isinstance(special_ids, np.ndarray) else np.fromiter(special_ids, np.int64)
    candidates = ~np.isin(ids, specials)
    counted = candidates if pad_id is None else ids != pad_id
    budget = num_to_predict(counted.sum(1), mask_rate, max_predictions)
    if scheme == "token":
        selected = _select_tokens(candidates, budget, rng)
    else:
        starts = None if word_starts is None else np.asarray(word_starts, bool)
        selected = _select_units(candidates, starts, budget, max_ngram if scheme == "ngram" else 1, rng)
    return _apply(ids, selected, max_predictions, rng, vocab_size, mask_id, replace_probs)


def _apply(ids, selected, max_predictions, rng, vocab_size, mask_id, replace_probs) -> dict[str, np.ndarray]:
    """Packs the chosen positions into P slots per row and replaces them 80/10/10, each token on its own."""
    b = len(ids)
    row, col = np.nonzero(selected)  # row-major: columns ascend within a row
    counts = np.bincount(row, minlength=b)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    original = ids[row, col]
    draw = rng.random(len(row))
    random_ids = rng.integers(0, vocab_size, len(row))
    p_mask, p_random, _ = replace_probs
    replaced = np.where(draw < p_mask, mask_id, np.where(draw < p_mask + p_random, random_ids, original))

    out = {
        "input_ids": ids.astype(np.int32, copy=True),
        "masked_positions": np.zeros((b, max_predictions), np.int32),
        "masked_ids": np.zeros((b, max_predictions), np.int32),
        "masked_weights": np.zeros((b, max_predictions), np.float32),
    }
    out["input_ids"][row, col] = replaced
    out["masked_positions"][row, slot] = col
    out["masked_ids"][row, slot] = original
    out["masked_weights"][row, slot] = 1.0
    return out
