"""Pretraining instances from tokenized documents, as Google's BERT and ALBERT cut them.

`create_instances` turns documents (lists of sentences of token ids) into
fixed-length rows `[CLS] A [SEP] B [SEP] pad...` for NSP (BERT) or SOP
(ALBERT), or into packed single segments `[CLS] ... [SEP] pad...` for
RoBERTa's FULL-SENTENCES / DOC-SENTENCES inputs. Masking is not done here: it
happens per batch (`bert_jax.objectives.masking`) so that it can be dynamic.

Why ranges: every segment BERT builds is a run of consecutive sentences of one
document, and `truncate_seq_pair` only ever deletes tokens at a segment's
front or back. So a segment is a `[start, end)` range in one flat token array
of the whole corpus; the sequential, random part (choosing segments) works on
sentence lengths only, and the rows are gathered at the end in one vectorised
step. That keeps this several times faster than a train step consumes rows.

`BatchIterator` hands out shuffled row indices, one permutation per epoch from
`default_rng([seed, epoch])`, so its whole state is `(epoch, position)`.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Sequence

import numpy as np

PAIR_OBJECTIVES = ("nsp", "sop", "none")
PACK_MODES = ("full_sentences", "doc_sentences")
_ASSEMBLE_CHUNK = 8192  # rows gathered at once: bounds the [rows, L] index temporaries


@dataclasses.dataclass
class Instances:
    """Rows ready for masking; every array has N rows, `[N, L]` ones are zero-padded with `pad_id`.

    `pair_labels` follow Hugging Face: NSP 0 = B is A's continuation, 1 = B is
    random (`BertForPreTraining.next_sentence_label`); SOP 0 = in order,
    1 = swapped (`AlbertForPreTraining.sentence_order_label`); all 0 for 'none'.
    `word_starts` is True at tokens that begin a word (whole-word and n-gram
    masking group the tokens that follow into that word), False at [CLS],
    [SEP] and padding. `unit_starts` is, per token, the coarsest level of
    ERNIE's knowledge units (0 basic word, 1 phrase, 2 entity; see
    `bert_jax.data.knowledge_units`) at which the token begins a unit, -1
    where it begins none; without a `unit_start_fn` it is 0 at word starts.
    """

    input_ids: np.ndarray  # [N, L] int32
    token_type_ids: np.ndarray  # [N, L] int32: 0 for [CLS] A [SEP], 1 for B [SEP]
    attention_mask: np.ndarray  # [N, L] int32: 1 on tokens, 0 on padding
    pair_labels: np.ndarray  # [N] int32
    word_starts: np.ndarray  # [N, L] bool
    unit_starts: np.ndarray  # [N, L] int8

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, index: np.ndarray) -> Instances:
        """The rows `index` (a batch), as a new `Instances`."""
        return Instances(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


@dataclasses.dataclass
class _Corpus:
    """All sentences in one flat token array; sentence s is `tokens[bounds[s]:bounds[s + 1]]`."""

    tokens: np.ndarray  # [T] int32
    word_starts: np.ndarray  # [T] bool
    unit_starts: np.ndarray  # [T] int8
    bounds: list[int]  # [S + 1] token offsets of the sentences
    doc_bounds: list[int]  # [D + 1] sentence offsets of the documents

    @property
    def num_documents(self) -> int:
        return len(self.doc_bounds) - 1


def _flatten(
    documents: Sequence[Sequence[Sequence[int]]],
    word_start_fn: Callable[[list[int]], Sequence[bool]] | None,
    unit_start_fn: Callable[[list[int]], Sequence[int]] | None = None,
) -> _Corpus:
    """Drops empty sentences and documents (as BERT does) and flattens the rest into one array."""
    kept = [[list(s) for s in doc if len(s)] for doc in documents]
    kept = [doc for doc in kept if doc]
    if not kept:
        n_sentences = sum(len(doc) for doc in documents)
        raise ValueError(
            f"corpus has no non-empty lines: {len(documents)} documents and {n_sentences} sentences were given, "
            "none with a token; check the corpus path and that the tokenizer produces ids for its text"
        )
    sentences = list(itertools.chain.from_iterable(kept))
    lengths = [len(s) for s in sentences]
    total = sum(lengths)
    tokens = np.fromiter(itertools.chain.from_iterable(sentences), dtype=np.int32, count=total)
    if word_start_fn is None:
        starts = np.ones(total, dtype=bool)
    else:
        starts = np.fromiter(
            itertools.chain.from_iterable(_word_starts_of(s, word_start_fn) for s in sentences), dtype=bool, count=total
        )
    if unit_start_fn is None:
        units = np.where(starts, 0, -1).astype(np.int8)
    else:
        units = np.fromiter(
            itertools.chain.from_iterable(_word_starts_of(s, unit_start_fn) for s in sentences), np.int8, count=total
        )
    bounds = [0, *itertools.accumulate(lengths)]
    doc_bounds = [0, *itertools.accumulate(len(doc) for doc in kept)]
    return _Corpus(tokens, starts, units, bounds, doc_bounds)


def _word_starts_of(sentence: list[int], word_start_fn: Callable[[list[int]], Sequence[bool]]) -> Sequence[bool]:
    flags = word_start_fn(sentence)
    if len(flags) != len(sentence):
        raise ValueError(f"word_start_fn returned {len(flags)} flags for a sentence of {len(sentence)} tokens")
    return flags


def _truncation_counts(len_a: int, len_b: int, max_num_tokens: int) -> tuple[int, int]:
    """How many tokens BERT's `truncate_seq_pair` deletes from A and from B.

    It deletes one token at a time from the longer segment (from B on a tie)
    until the pair fits; the counts follow in closed form. Which end each
    deletion hits is a fair coin per token, drawn later as a binomial.
    """
    excess = len_a + len_b - max_num_tokens
    if excess <= 0:
        return 0, 0
    cut_a = cut_b = 0
    if len_a > len_b:
        cut_a = min(excess, len_a - len_b)
    else:
        cut_b = min(excess, len_b - len_a)
    excess -= cut_a + cut_b
    return cut_a + excess // 2, cut_b + (excess + 1) // 2


class _PairBuilder:
    """Google BERT's `create_instances_from_document` (NSP) and ALBERT's (SOP) over sentence ranges."""

    def __init__(self, corpus: _Corpus, max_num_tokens: int, short_seq_prob: float, objective: str, rnd: random.Random):
        self.c, self.max_num_tokens, self.short_seq_prob = corpus, max_num_tokens, short_seq_prob
        self.objective, self.rnd = objective, rnd
        # a_start, a_len, b_start, b_len (token offsets into corpus.tokens), label, cut_a, cut_b
        self.rows: list[tuple[int, int, int, int, int, int, int]] = []

    def document(self, d: int) -> None:
        """Cuts document d into chunks of about `target` tokens and emits one pair per chunk."""
        rnd, bounds = self.rnd, self.c.bounds
        first, end = self.c.doc_bounds[d], self.c.doc_bounds[d + 1]
        # As in BERT, the target length is drawn once per document.
        target = self.max_num_tokens
        if rnd.random() < self.short_seq_prob:
            target = rnd.randint(2, self.max_num_tokens)
        chunk_first, i = first, first
        while i < end:
            if i == end - 1 or bounds[i + 1] - bounds[chunk_first] >= target:
                n = i + 1 - chunk_first
                a_end = chunk_first + (rnd.randint(1, n - 1) if n >= 2 else 1)
                if self.objective == "nsp":
                    i = self._nsp(d, chunk_first, a_end, i, target)
                else:
                    self._sop(chunk_first, a_end, i)
                chunk_first = i + 1
            i += 1

    def _nsp(self, d: int, chunk_first: int, a_end: int, last: int, target: int) -> int:
        """BERT: B is the rest of the chunk, or (50%, always for a 1-sentence chunk) from a random document.

        Returns the chunk's new last sentence: a random B puts the chunk's
        unused sentences back for the next chunk.
        """
        rnd, bounds = self.rnd, self.c.bounds
        a_start, a_len = bounds[chunk_first], bounds[a_end] - bounds[chunk_first]
        if a_end == last + 1 or rnd.random() < 0.5:
            num_docs = self.c.num_documents
            for _ in range(10):  # BERT's 10 tries; a one-document corpus falls back to itself
                other = rnd.randint(0, num_docs - 1)
                if other != d:
                    break
            j = rnd.randint(self.c.doc_bounds[other], self.c.doc_bounds[other + 1] - 1)
            b_start, r_end = bounds[j], self.c.doc_bounds[other + 1]
            j += 1
            while j < r_end and bounds[j] - b_start < target - a_len:
                j += 1
            self._emit(a_start, a_len, b_start, bounds[j] - b_start, 1)
            return a_end - 1
        self._emit(a_start, a_len, bounds[a_end], bounds[last + 1] - bounds[a_end], 0)
        return last

    def _sop(self, chunk_first: int, a_end: int, last: int) -> None:
        """ALBERT: A and B consecutive text of the chunk, swapped with probability 1/2.

        ALBERT takes a random-document B when the chunk is one sentence and
        labels it 'swapped', which mixes NSP into SOP; here that one sentence
        is split at a random token instead (skipped when it has one token),
        so every label-1 pair really is an in-order pair reversed.
        """
        rnd, bounds = self.rnd, self.c.bounds
        if a_end == last + 1:
            start, length = bounds[chunk_first], bounds[a_end] - bounds[chunk_first]
            if length < 2:
                return
            cut = rnd.randint(1, length - 1)
            a, b = (start, cut), (start + cut, length - cut)
        else:
            a = (bounds[chunk_first], bounds[a_end] - bounds[chunk_first])
            b = (bounds[a_end], bounds[last + 1] - bounds[a_end])
        if rnd.random() < 0.5:
            self._emit(*b, *a, 1)
        else:
            self._emit(*a, *b, 0)

    def _emit(self, a_start: int, a_len: int, b_start: int, b_len: int, label: int) -> None:
        cut_a, cut_b = _truncation_counts(a_len, b_len, self.max_num_tokens)
        self.rows.append((a_start, a_len, b_start, b_len, label, cut_a, cut_b))


def _pair_rows(corpus: _Corpus, max_num_tokens: int, short_seq_prob: float, objective: str, rng: np.random.Generator):
    """Segment ranges and labels for NSP/SOP, truncated as `truncate_seq_pair` does."""
    # The sequential choices use Python's RNG (as BERT does, and ~20x cheaper per scalar draw), seeded from `rng`.
    builder = _PairBuilder(corpus, max_num_tokens, short_seq_prob, objective, random.Random(int(rng.integers(2**63))))
    for d in range(corpus.num_documents):
        builder.document(d)
    if not builder.rows:
        raise ValueError("corpus has no non-empty lines: no sentence pair could be formed (every sentence has 1 token)")
    a_start, a_len, b_start, b_len, labels, cut_a, cut_b = np.array(builder.rows, dtype=np.int64).T
    front_a, front_b = rng.binomial(cut_a, 0.5), rng.binomial(cut_b, 0.5)  # one fair coin per deleted token
    return a_start + front_a, a_len - cut_a, b_start + front_b, b_len - cut_b, labels


def _sentence_documents(corpus: _Corpus) -> list[int]:
    """The document index of every sentence."""
    d = corpus.doc_bounds
    return [doc for doc in range(corpus.num_documents) for _ in range(d[doc + 1] - d[doc])]


def _with_document_separators(corpus: _Corpus, sep_id: int) -> tuple[_Corpus, list[int]]:
    """The corpus with a [SEP] after every document but the last, and each sentence's document."""
    doc_ends = [corpus.bounds[s] for s in corpus.doc_bounds[1:-1]]
    tokens = np.insert(corpus.tokens, doc_ends, sep_id)
    starts = np.insert(corpus.word_starts, doc_ends, False)
    units = np.insert(corpus.unit_starts, doc_ends, -1)
    sentence_doc = _sentence_documents(corpus)
    bounds = [b + sentence_doc[min(s, len(sentence_doc) - 1)] for s, b in enumerate(corpus.bounds)]
    return _Corpus(tokens, starts, units, bounds, corpus.doc_bounds), sentence_doc


def _packed_rows(corpus: _Corpus, max_num_tokens: int, pack_mode: str, sep_id: int):
    """RoBERTa's FULL-SENTENCES (across documents, a [SEP] between them) or DOC-SENTENCES packing.

    Greedy, in corpus order: a sequence takes whole sentences while they fit;
    a sentence longer than a sequence is cut into sequence-sized pieces.
    """
    if pack_mode == "full_sentences":
        corpus, sentence_doc = _with_document_separators(corpus, sep_id)
    else:
        sentence_doc = _sentence_documents(corpus)
    rows: list[tuple[int, int]] = []
    seq_start, seq_len, seq_doc = 0, 0, -1
    for s, doc in enumerate(sentence_doc):
        start, end = corpus.bounds[s], corpus.bounds[s + 1]
        if pack_mode == "full_sentences" and s + 1 < len(sentence_doc) and sentence_doc[s + 1] != doc:
            end -= 1  # bounds[s + 1] is past the document's [SEP]
        for piece in range(start, end, max_num_tokens):
            length = min(max_num_tokens, end - piece)
            new_doc = seq_len > 0 and doc != seq_doc
            cost = length + (1 if new_doc else 0)  # the [SEP] between documents
            if seq_len and (seq_len + cost > max_num_tokens or (new_doc and pack_mode == "doc_sentences")):
                rows.append((seq_start, seq_len))
                seq_len = 0
            if seq_len == 0:
                seq_start, cost = piece, length
            seq_len += cost
            seq_doc = doc
    rows.append((seq_start, seq_len))
    start, length = np.array(rows, dtype=np.int64).T
    zeros = np.zeros_like(start)
    return corpus, (start, length, zeros, zeros, zeros)


def _assemble(corpus: _Corpus, rows, max_seq_length: int, cls_id: int, sep_id: int, pad_id: int) -> Instances:
    """Gathers `[CLS] A [SEP] (B [SEP])` rows from the flat token array, vectorised, in chunks."""
    a_start, a_len, b_start, b_len, labels = rows
    n = len(a_start)
    out = Instances(
        input_ids=np.empty((n, max_seq_length), np.int32),
        token_type_ids=np.empty((n, max_seq_length), np.int32),
        attention_mask=np.empty((n, max_seq_length), np.int32),
        pair_labels=labels.astype(np.int32),
        word_starts=np.empty((n, max_seq_length), bool),
        unit_starts=np.empty((n, max_seq_length), np.int8),
    )
    pos = np.arange(max_seq_length)[None, :]
    for lo in range(0, n, _ASSEMBLE_CHUNK):
        sl = slice(lo, lo + _ASSEMBLE_CHUNK)
        a0, la, b0, lb = (x[sl, None] for x in (a_start, a_len, b_start, b_len))
        in_a = (pos >= 1) & (pos <= la)
        in_b = (pos >= la + 2) & (pos < la + 2 + lb)
        seps = (pos == la + 1) | ((lb > 0) & (pos == la + 2 + lb))
        src = np.where(in_a, a0 + pos - 1, np.where(in_b, b0 + pos - la - 2, 0))
        text = in_a | in_b
        ids = np.where(text, corpus.tokens[src], pad_id)
        ids[:, 0] = cls_id
        ids[seps] = sep_id
        out.input_ids[sl] = ids
        out.token_type_ids[sl] = (pos >= la + 2) & (text | seps)
        out.attention_mask[sl] = pos < la + 2 + np.where(lb > 0, lb + 1, 0)
        out.word_starts[sl] = text & corpus.word_starts[src]
        out.unit_starts[sl] = np.where(text, corpus.unit_starts[src], -1)
    return out


def create_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    *,
    max_seq_length: int,
    short_seq_prob: float = 0.1,
    pair_objective: str,
    rng: np.random.Generator,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    word_start_fn: Callable[[list[int]], Sequence[bool]] | None = None,
    pack_mode: str = "full_sentences",
    unit_start_fn: Callable[[list[int]], Sequence[int]] | None = None,
) -> Instances:
    """Cuts tokenized documents (documents -> sentences -> ids) into pretraining rows, in document order.

    'nsp' (BERT) and 'sop' (ALBERT) follow `create_pretraining_data.py`:
    chunks of whole sentences up to a target length (the full
    `max_seq_length - 3`, or with probability `short_seq_prob` per document a
    random one in [2, max]), split into A and B at a random sentence, then
    truncated at random ends to fit. 'none' packs whole sentences into single
    segments of up to `max_seq_length - 2` tokens (`pack_mode`
    'full_sentences' crosses documents with a [SEP] between them,
    'doc_sentences' does not); `short_seq_prob` and `rng` do not apply there.

    `word_start_fn(ids)` is called once per sentence and gives one flag per
    token (True where a word begins); without it every text token starts a
    word. `unit_start_fn(ids)` likewise gives each token's `unit_starts`
    level (e.g. `bert_jax.data.knowledge_units.KnowledgeUnits`). Shuffling is
    left to `BatchIterator`; static masking copies (`dupe_factor`) are the
    caller's: call again with another `rng`.
    """
    if pair_objective not in PAIR_OBJECTIVES:
        raise ValueError(f"pair_objective must be one of {PAIR_OBJECTIVES}, got {pair_objective!r}")
    if pack_mode not in PACK_MODES:
        raise ValueError(f"pack_mode must be one of {PACK_MODES}, got {pack_mode!r}")
    min_length = 3 if pair_objective == "none" else 5
    if max_seq_length < min_length:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text; use at least {min_length}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    corpus = _flatten(documents, word_start_fn, unit_start_fn)
    if pair_objective == "none":
        corpus, rows = _packed_rows(corpus, max_seq_length - 2, pack_mode, sep_id)
    else:
        rows = _pair_rows(corpus, max_seq_length - 3, short_seq_prob, pair_objective, rng)
    return _assemble(corpus, rows, max_seq_length, cls_id, sep_id, pad_id)


class BatchIterator:
    """Shuffled batches of row indices, epoch after epoch, resumable exactly from `(epoch, position)`.

    Epoch e's order is `default_rng([seed, epoch]).permutation(num_examples)`,
    so nothing but the two counters needs saving. With `drop_remainder`
    (fixed batch shapes, as training wants) the last partial batch of each
    epoch is skipped; `epochs=None` never stops.
    """

    def __init__(
        self, num_examples: int, batch_size: int, seed: int, epochs: int | None = None, drop_remainder: bool = True
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_examples < (batch_size if drop_remainder else 1):
            raise ValueError(
                f"{num_examples} examples cannot fill one batch of {batch_size}; use a larger corpus or smaller batch"
            )
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, int(seed)
        self.epochs, self.drop_remainder = epochs, drop_remainder
        self.epoch, self.position = 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_examples)
        return self._order

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> np.ndarray:
        limit = self.num_examples - (self.num_examples % self.batch_size if self.drop_remainder else 0)
        if self.position >= limit:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self.epochs is not None and self.epoch >= self.epochs:
            raise StopIteration
        batch = self._epoch_order()[self.position : self.position + self.batch_size]
        self.position += len(batch)
        return batch

    def state_dict(self) -> dict[str, int]:
        """Where the iterator stands: the next batch starts at `position` in epoch `epoch`'s order."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continues exactly where `state_dict()` was taken (same seed, sizes)."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.num_examples:
            raise ValueError(f"invalid BatchIterator state {state} for {self.num_examples} examples")
        self.epoch, self.position, self._order = epoch, position, None


def iterate_batches(
    instances: Instances | int, batch_size: int, rng: int | np.random.Generator, epochs: int | None = None
) -> BatchIterator:
    """A `BatchIterator` over `instances` (or a row count); `rng` is the seed, or a Generator to draw one from."""
    seed = int(rng.integers(2**63)) if isinstance(rng, np.random.Generator) else int(rng)
    num_examples = instances if isinstance(instances, int) else len(instances)
    return BatchIterator(num_examples, batch_size, seed, epochs)
