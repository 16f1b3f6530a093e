"""Masked-LM masking of a batch on the host: BERT's token, Google's whole-word, ALBERT's n-gram, SpanBERT's span.

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
- 'span' (SpanBERT, Joshi et al. 2020, section 3.1) picks spans of whole
  words whose length follows Geometric(`span_p`) truncated to
  1..`max_span_length` words (renormalised: the paper's mean of 3.8 words
  for p=0.2, l_max=10), by the n-gram rules above, except that a span never
  crosses a special token (it is cut there, like at the row's end); the
  80/10/10 replacement is decided once per span, and each prediction slot
  also gets its span's boundary positions (the tokens just outside it) and
  its offset inside it, for the span-boundary objective;
- 'knowledge' (ERNIE 1.0, Sun et al. 2019) picks whole units as 'whole_word'
  does, the units of each row being its basic words, phrases or entities
  (one level per row, drawn with `unit_level_probs`);
- each chosen token independently becomes [MASK] (80%), a random id in
  [0, vocab_size) (10%) or stays itself (10%): BERT decides per token, also
  inside a whole word ('span' decides per span, see above).

Everything is vectorised over the batch; the word and n-gram schemes loop over
candidate slots (at most L iterations of [B]-sized operations), never over
tokens in Python.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SCHEMES = ("token", "whole_word", "ngram", "span", "knowledge")
SPAN_KEYS = ("span_left", "span_right", "span_offset")  # the extra outputs of the 'span' scheme


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


def _length_cdf(weights: np.ndarray) -> np.ndarray:
    """The CDF of lengths 1..len(weights) with probabilities ∝ weights."""
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0  # exact, so a draw in [0, 1) never passes it
    return cdf


def _ngram_cdf(max_ngram: int) -> np.ndarray:
    """The CDF of ALBERT's n-gram length law p(n) ∝ 1/n, n = 1..max_ngram."""
    return _length_cdf(1.0 / np.arange(1, max_ngram + 1))


def span_length_probs(span_p: float, max_span_length: int) -> np.ndarray:
    """SpanBERT's span-length law in words: p(n) ∝ span_p (1 - span_p)^(n-1), n = 1..max_span_length.

    Truncated and renormalised rather than clipped (min(n, l_max)): with
    p=0.2, l_max=10 that gives the paper's mean span length of 3.8 words
    (clipping would give 4.5).
    """
    n = np.arange(1, max_span_length + 1)
    weights = span_p * (1.0 - span_p) ** (n - 1)
    return weights / weights.sum()


def _select_units(
    candidates: np.ndarray,
    word_starts: np.ndarray | None,
    budget: np.ndarray,
    max_ngram: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Whole words (`max_ngram=1`) or ALBERT n-grams of words (p(n) ∝ 1/n), as a [B, L] boolean mask."""
    return _select_spans(candidates, word_starts, budget, _ngram_cdf(max_ngram), rng) > 0


def _select_spans(
    candidates: np.ndarray,
    word_starts: np.ndarray | None,
    budget: np.ndarray,
    length_cdf: np.ndarray,
    rng: np.random.Generator,
    within_segments: bool = False,
) -> np.ndarray:
    """Spans of whole words with lengths from `length_cdf`, chosen greedily in random order.

    Returns [B, L] int64: 0 where a token is not chosen, else 1 + the row
    index of its span's first word, so that adjacent spans stay distinct.

    As in ALBERT, every word is a possible n-gram start with its own drawn n
    (an n-gram running past the row's last word is cut there); starts are visited in random order
    until the row's budget is spent; an n-gram that overruns the budget is
    shortened (n-1, ..., 1) and skipped if even one word overruns or if it
    overlaps a chosen one. Words are numbered across [SEP] as ALBERT's
    candidate list is, so an n-gram may end in A and go on in B; with
    `within_segments` (SpanBERT) a span is cut at a special token instead.
    """
    b, length = candidates.shape
    max_ngram = len(length_cdf)
    rows = np.arange(b)
    before = np.zeros_like(candidates)
    before[:, 1:] = candidates[:, :-1]
    # A word starts at a flagged token, or at any text token right after a special one (a leading '##' piece).
    starts = candidates if word_starts is None else candidates & (~before | word_starts)
    num_words = starts.sum(1)
    u = int(num_words.max(initial=0))
    if u == 0:
        return np.zeros(candidates.shape, np.int64)
    word_of = np.cumsum(starts, axis=1) - 1  # [B, L]: the word of each text token
    word_len = np.bincount((rows[:, None] * u + word_of)[candidates], minlength=b * u).reshape(b, u)
    cum = np.zeros((b, u + 1 + max_ngram), np.int64)  # cum[:, s + m] - cum[:, s]: tokens of words s..s+m-1
    np.cumsum(word_len, axis=1, out=cum[:, 1 : u + 1])
    cum[:, u + 1 :] = cum[:, u : u + 1]

    # As in ALBERT, n is drawn from the full law even near the row's end, where the n-gram just comes out shorter.
    ngram = 1 + (rng.random((b, u))[..., None] > length_cdf).sum(-1)
    keys = rng.random((b, u))
    keys[np.arange(u)[None, :] >= num_words[:, None]] = 2.0
    order = np.argsort(keys, axis=1)
    segment = np.full((b, u + max_ngram), -1)  # words s..s+m-1 are one segment: the same count of specials before
    if within_segments:
        r, c = np.nonzero(starts)
        segment[r, word_of[r, c]] = np.cumsum(~candidates, axis=1)[r, c]

    chosen = np.zeros((b, u + max_ngram), np.int64)  # 1 + the first word of the span holding each word
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
            inside = ~within_segments | (segment[rows, s + m - 1] == segment[rows, s])
            fit += (m <= n) & (total + cum[rows, s + m] - base <= budget) & inside
        overlap = np.zeros(b, bool)
        for m in range(max_ngram):
            overlap |= (m < fit) & (chosen[rows, s + m] > 0)
        take = active & (fit > 0) & ~overlap
        for m in range(max_ngram):
            hit = take & (m < fit)
            chosen[rows[hit], s[hit] + m] = s[hit] + 1
        total += np.where(take, cum[rows, s + fit] - base, 0)
    return np.where(candidates, np.take_along_axis(chosen, np.maximum(word_of, 0), axis=1), 0)


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
    max_span_length: int = 10,
    span_p: float = 0.2,
    unit_starts: np.ndarray | None = None,
    unit_level_probs: tuple[float, ...] = (0.5, 0.25, 0.25),
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

    'span' (lengths in words: Geometric(`span_p`) on 1..`max_span_length`)
    also returns `span_left`, `span_right` (positions of the tokens just
    before and just after the slot's span) and `span_offset` (the slot's
    token position inside its span, from 0), each [B, P] int32, 0 in unused
    slots.

    'knowledge' (ERNIE 1.0) draws a level per row with `unit_level_probs`
    (basic, phrase, entity) and picks whole units of that level as
    'whole_word' picks words: `unit_starts [B, L]` (int, from
    `bert_jax.data.knowledge_units`) is the coarsest level at which each token
    begins a unit, -1 where it begins none; without it every level is `word_starts`.
    """
    ids = np.asarray(input_ids)
    _check_args(ids, scheme, word_starts, mask_rate, max_predictions, max_ngram, replace_probs)
    if max_span_length < 1 or not 0.0 < span_p <= 1.0:
        raise ValueError(f"need max_span_length >= 1 and span_p in (0, 1], got {max_span_length} and {span_p}")
    specials = special_ids if isinstance(special_ids, np.ndarray) else np.fromiter(special_ids, np.int64)
    candidates = ~np.isin(ids, specials)
    counted = candidates if pad_id is None else ids != pad_id
    budget = num_to_predict(counted.sum(1), mask_rate, max_predictions)
    spans = None
    if scheme == "token":
        selected = _select_tokens(candidates, budget, rng)
    elif scheme == "span":
        starts = None if word_starts is None else np.asarray(word_starts, bool)
        law = _length_cdf(span_length_probs(span_p, max_span_length))
        spans = _select_spans(candidates, starts, budget, law, rng, within_segments=True)
        selected = spans > 0
    elif scheme == "knowledge":
        starts = _knowledge_starts(unit_starts, word_starts, ids.shape, unit_level_probs, rng)
        selected = _select_units(candidates, starts, budget, 1, rng)
    else:
        starts = None if word_starts is None else np.asarray(word_starts, bool)
        selected = _select_units(candidates, starts, budget, max_ngram if scheme == "ngram" else 1, rng)
    return _apply(ids, selected, max_predictions, rng, vocab_size, mask_id, replace_probs, spans)


def _knowledge_starts(unit_starts, word_starts, shape, level_probs, rng: np.random.Generator) -> np.ndarray | None:
    """ERNIE: the unit starts of one level per row, the level drawn with `level_probs` (basic, phrase, entity)."""
    probs = np.asarray(level_probs, np.float64)
    if probs.ndim != 1 or probs.min(initial=0) < 0 or abs(probs.sum() - 1.0) > 1e-6:
        raise ValueError(f"unit_level_probs must be probabilities per level summing to 1, got {level_probs}")
    if unit_starts is None:
        return None if word_starts is None else np.asarray(word_starts, bool)
    if np.shape(unit_starts) != shape:
        raise ValueError(f"unit_starts has shape {np.shape(unit_starts)}, input_ids {shape}")
    level = (rng.random(shape[0])[:, None] > np.cumsum(probs)[None, :-1]).sum(1)  # [B]
    return np.asarray(unit_starts) >= level[:, None]


def _apply(
    ids, selected, max_predictions, rng, vocab_size, mask_id, replace_probs, spans=None
) -> dict[str, np.ndarray]:
    """Packs the chosen positions into P slots per row and replaces them 80/10/10.

    Each token decides on its own, or with `spans` (the span ids of
    `_select_spans`) each span decides for all its tokens, and the span
    boundary outputs are added.
    """
    b = len(ids)
    row, col = np.nonzero(selected)  # row-major: columns ascend within a row
    counts = np.bincount(row, minlength=b)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    original = ids[row, col]
    if spans is None:
        draw = rng.random(len(row))
    else:
        owner = spans[row, col]
        first = np.ones(len(row), bool)  # a span's first token (spans are contiguous, rows ascend)
        first[1:] = (row[1:] != row[:-1]) | (owner[1:] != owner[:-1])
        span_index = np.cumsum(first) - 1
        draw = rng.random(int(first.sum()))[span_index]
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
    if spans is not None:
        last = np.ones(len(row), bool)
        last[:-1] = first[1:]
        start, end = col[first][span_index], col[last][span_index]
        for key, value in zip(SPAN_KEYS, (start - 1, end + 1, col - start)):
            out[key] = np.zeros((b, max_predictions), np.int32)
            out[key][row, slot] = value
    return out
