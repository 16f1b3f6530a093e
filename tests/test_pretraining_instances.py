"""Pretraining instances: NSP/SOP pairs as Google's BERT/ALBERT cut them, RoBERTa packing, the batch iterator.

The synthetic corpus numbers every token by its position in the corpus (id =
OFFSET + position), so each row can be traced back to the documents and
sentences it came from. Rates are checked to within 5 binomial standard
deviations (plus any bias the docstring names); seeds are fixed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bert_jax.data.pretraining import BatchIterator, Instances, create_instances, iterate_batches

PAD, CLS, SEP = 0, 1, 2
OFFSET = 10


@dataclasses.dataclass
class Corpus:
    documents: list[list[list[int]]]
    doc: np.ndarray  # [T] document of each token (index: id - OFFSET)
    sentence_first: np.ndarray  # [T] bool
    sentence_last: np.ndarray  # [T] bool
    doc_first: np.ndarray  # [T] bool
    doc_last: np.ndarray  # [T] bool
    in_last_sentence: np.ndarray  # [T] bool: the token is in its document's last sentence


def make_corpus(num_docs: int, sentences=(20, 60), tokens=(3, 20), seed: int = 0, long_sentence: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    documents, doc, s_first, s_last, d_first, d_last, in_last = [], [], [], [], [], [], []
    next_id = OFFSET
    for d in range(num_docs):
        lengths = list(rng.integers(*tokens, rng.integers(*sentences)))
        if long_sentence and d == 1:
            lengths.insert(1, long_sentence)
        document = []
        for k, n in enumerate(lengths):
            document.append(list(range(next_id, next_id + n)))
            next_id += n
            doc += [d] * n
            s_first += [True] + [False] * (n - 1)
            s_last += [False] * (n - 1) + [True]
            d_first += [k == 0] + [False] * (n - 1)
            d_last += [False] * (n - 1) + [k == len(lengths) - 1]
            in_last += [k == len(lengths) - 1] * n
        documents.append(document)
    return Corpus(documents, *(np.array(x) for x in (doc, s_first, s_last, d_first, d_last, in_last)))


def build(corpus: Corpus, objective: str, length: int = 128, seed: int = 0, **kw) -> Instances:
    return create_instances(
        corpus.documents,
        max_seq_length=length,
        pair_objective=objective,
        rng=np.random.default_rng(seed),
        cls_id=CLS,
        sep_id=SEP,
        pad_id=PAD,
        **kw,
    )


def segments(inst: Instances) -> list[tuple[np.ndarray, np.ndarray]]:
    """(A, B) token ids of every pair row, after checking `[CLS] A [SEP] B [SEP] pad` and its types and mask."""
    out = []
    n, length = inst.input_ids.shape
    assert inst.input_ids.dtype == np.int32 and inst.pair_labels.shape == (n,)
    for ids, types, mask, starts in zip(inst.input_ids, inst.token_type_ids, inst.attention_mask, inst.word_starts):
        seps = np.nonzero(ids == SEP)[0]
        assert ids[0] == CLS and len(seps) == 2, ids
        s1, s2 = seps
        assert s1 >= 2 and s2 >= s1 + 2, "A and B each have a token"
        np.testing.assert_array_equal(ids[s2 + 1 :], PAD)
        np.testing.assert_array_equal(types, np.r_[np.zeros(s1 + 1), np.ones(s2 - s1), np.zeros(length - s2 - 1)])
        np.testing.assert_array_equal(mask, np.arange(length) <= s2)
        assert not starts[[0, s1, s2]].any() and not starts[s2 + 1 :].any()
        out.append((ids[1:s1] - OFFSET, ids[s1 + 1 : s2] - OFFSET))
    return out


def contiguous(x: np.ndarray) -> bool:
    return bool(np.all(np.diff(x) == 1))


def five_sigma(p: float, n: int) -> float:
    return 5 * np.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus(400)


def test_nsp_pairs_follow_bert(corpus):
    """Label 0: B is the text right after A in A's document; label 1: B comes from another document.

    BERT always takes a random B when a chunk is a single sentence; in this
    corpus (short sentences, no short targets) that is exactly when A holds
    its document's last sentence. Every other chunk flips a fair coin.
    """
    inst = build(corpus, "nsp", short_seq_prob=0.0)
    max_tokens = 128 - 3
    untruncated, forced, coins = 0, [], []
    for (a, b), label in zip(segments(inst), inst.pair_labels):
        assert contiguous(a) and contiguous(b) and len(a) + len(b) <= max_tokens
        assert len(set(corpus.doc[a])) == 1 and len(set(corpus.doc[b])) == 1
        if label == 0:
            assert corpus.doc[a[0]] == corpus.doc[b[0]] and b[0] > a[-1]
            if len(a) + len(b) < max_tokens:  # nothing truncated: whole sentences, B right after A
                untruncated += 1
                assert b[0] == a[-1] + 1 and corpus.sentence_first[a[0]] and corpus.sentence_last[b[-1]]
        else:
            assert corpus.doc[a[0]] != corpus.doc[b[0]]
        (forced if corpus.in_last_sentence[a].any() else coins).append(label)
    assert untruncated > 100 and len(forced) > 50 and all(forced)
    assert abs(np.mean(coins) - 0.5) < five_sigma(0.5, len(coins)), np.mean(coins)
    assert np.mean(inst.attention_mask.sum(1) == 128) > 0.6, "most rows fill the sequence"


def test_sop_swaps_half_of_the_in_order_pairs(corpus):
    inst = build(corpus, "sop")
    max_tokens = 128 - 3
    for (a, b), label in zip(segments(inst), inst.pair_labels):
        assert contiguous(a) and contiguous(b) and len(a) + len(b) <= max_tokens
        assert len(set(corpus.doc[a]) | set(corpus.doc[b])) == 1, "SOP pairs never leave their document"
        first, second = (a, b) if label == 0 else (b, a)  # swapped: the in-order pair, reversed
        assert second[0] > first[-1]
        if len(a) + len(b) < max_tokens:
            assert second[0] == first[-1] + 1
    assert abs(inst.pair_labels.mean() - 0.5) < five_sigma(0.5, len(inst))


def test_sop_splits_a_lone_long_sentence_instead_of_taking_a_random_one():
    corpus = make_corpus(30, long_sentence=300, seed=1)
    inst = build(corpus, "sop", seed=3)
    from_long = 0
    for (a, b), _ in zip(segments(inst), inst.pair_labels):
        assert len(set(corpus.doc[a]) | set(corpus.doc[b])) == 1
        from_long += int(np.all(corpus.doc[a] == 1) and not corpus.sentence_first[a].any() and len(a) > 40)
    assert from_long >= 1


def packed_text(inst: Instances) -> list[np.ndarray]:
    """Each row's tokens between [CLS] and its final [SEP], after checking the single-segment layout."""
    rows = []
    for ids, types, mask, starts in zip(inst.input_ids, inst.token_type_ids, inst.attention_mask, inst.word_starts):
        n = int(mask.sum())
        assert ids[0] == CLS and ids[n - 1] == SEP and np.all(ids[n:] == PAD) and np.all(mask[:n] == 1)
        assert not types.any() and not starts[ids == SEP].any()
        rows.append(ids[1 : n - 1])
    return rows


def test_full_sentences_packing_crosses_documents_with_a_sep():
    corpus = make_corpus(60, long_sentence=300)
    inst = build(corpus, "none", short_seq_prob=0.5)
    assert not inst.pair_labels.any()
    rows = packed_text(inst)
    # every token exactly once, in corpus order: nothing dropped, nothing repeated
    text = np.concatenate([r[r != SEP] for r in rows]) - OFFSET
    np.testing.assert_array_equal(text, np.arange(len(corpus.doc)))
    crossings = 0
    for r in rows:
        t = r - OFFSET
        assert corpus.sentence_first[t[0]] or len(r) == 126, "a row starts at a sentence (or a long one's piece)"
        for k in np.nonzero(r == SEP)[0]:
            crossings += 1
            assert corpus.doc_last[t[k - 1]] and corpus.doc_first[t[k + 1]]
    assert crossings > 30
    assert inst.attention_mask.sum() / inst.attention_mask.size > 0.9, "rows are nearly full"


def test_doc_sentences_packing_stays_in_its_document():
    corpus = make_corpus(60)
    inst = build(corpus, "none", pack_mode="doc_sentences")
    rows = packed_text(inst)
    text = np.concatenate(rows) - OFFSET
    np.testing.assert_array_equal(text, np.arange(len(corpus.doc)))
    for r in rows:
        assert SEP not in r and len(set(corpus.doc[r - OFFSET])) == 1
    last = np.array([corpus.doc_last[r[-1] - OFFSET] for r in rows])
    assert last.sum() == 60, "each document ends a row"


def test_short_seq_prob_draws_a_short_target_for_a_tenth_of_the_documents():
    """With 10-token sentences, a full target (125) makes every is-next chunk 125 tokens after truncation,
    a short one (BERT: uniform in [2, 125], drawn per document) <= 120 unless it is >= 121: so a
    document is short with probability 0.1 * 119 / 124. Only is-next rows that do not end the document count.
    """
    docs = [
        [list(range(OFFSET + 1000 * (100 * d + s), OFFSET + 1000 * (100 * d + s) + 10)) for s in range(100)]
        for d in range(800)
    ]
    corpus = Corpus(docs, *(np.zeros(0),) * 6)
    for prob, expected in ((0.1, 0.1 * 119 / 124), (0.0, 0.0)):
        inst = build(corpus, "nsp", short_seq_prob=prob, seed=5)
        short = {}
        for (a, b), label in zip(segments(inst), inst.pair_labels):
            doc, last_sentence = b[-1] // 100_000, (b[-1] // 1000) % 100
            if label == 0 and last_sentence != 99:
                short.setdefault(doc, set()).add(len(a) + len(b) < 125)
        assert all(len(v) == 1 for v in short.values()), "the target is drawn once per document"
        assert len(short) > 750
        rate = np.mean([v.pop() for v in short.values()])
        assert abs(rate - expected) < five_sigma(0.1, len(short)), (prob, rate)


def test_word_starts_pass_through(corpus):
    small = Corpus(corpus.documents[:20], *(np.zeros(0),) * 6)
    default = build(small, "nsp")
    np.testing.assert_array_equal(default.word_starts, ~np.isin(default.input_ids, [PAD, CLS, SEP]))
    inst = build(small, "nsp", word_start_fn=lambda ids: [i % 3 == 0 for i in ids])
    text = ~np.isin(inst.input_ids, [PAD, CLS, SEP])
    np.testing.assert_array_equal(inst.word_starts, text & (inst.input_ids % 3 == 0))
    with pytest.raises(ValueError, match="word_start_fn returned"):
        build(small, "nsp", word_start_fn=lambda ids: [True])


def test_deterministic_given_the_rng(corpus):
    first, again, other = build(corpus, "nsp", seed=1), build(corpus, "nsp", seed=1), build(corpus, "nsp", seed=2)
    np.testing.assert_array_equal(first.input_ids, again.input_ids)
    np.testing.assert_array_equal(first.pair_labels, again.pair_labels)
    assert first.input_ids.shape != other.input_ids.shape or np.any(first.input_ids != other.input_ids)


@pytest.mark.parametrize("documents", [[], [[]], [[[]], [[], []]]])
def test_empty_corpus_is_a_clear_error(documents):
    for objective in ("nsp", "sop", "none"):
        with pytest.raises(ValueError, match="corpus has no non-empty lines"):
            create_instances(
                documents,
                max_seq_length=32,
                pair_objective=objective,
                rng=np.random.default_rng(0),
                cls_id=CLS,
                sep_id=SEP,
                pad_id=PAD,
            )


def test_bad_arguments_raise(corpus):
    with pytest.raises(ValueError, match="pair_objective"):
        build(corpus, "mlm")
    with pytest.raises(ValueError, match="max_seq_length"):
        build(corpus, "nsp", length=4)


def test_batch_iterator_epochs_and_exact_resume():
    it = BatchIterator(103, 10, seed=4)
    batches = [next(it) for _ in range(25)]  # 10 full batches per epoch, the 3 left over are dropped
    for epoch in range(2):
        seen = np.concatenate(batches[10 * epoch : 10 * epoch + 10])
        assert len(set(seen.tolist())) == 100 and seen.max() < 103
        np.testing.assert_array_equal(seen, np.random.default_rng([4, epoch]).permutation(103)[:100])
    assert not np.array_equal(np.concatenate(batches[:10]), np.concatenate(batches[10:20]))

    it = BatchIterator(103, 10, seed=4)
    for _ in range(13):
        next(it)
    state = it.state_dict()
    assert state == {"epoch": 1, "position": 30}
    resumed = BatchIterator(103, 10, seed=4)
    resumed.load_state_dict(state)
    for k in range(13, 25):
        np.testing.assert_array_equal(next(resumed), batches[k])

    at_boundary = BatchIterator(103, 10, seed=4)
    at_boundary.load_state_dict({"epoch": 0, "position": 100})  # saved right after an epoch's last batch
    np.testing.assert_array_equal(next(at_boundary), batches[10])


def test_iterate_batches_stops_after_epochs(corpus):
    inst = build(Corpus(corpus.documents[:30], *(np.zeros(0),) * 6), "nsp")
    batches = list(iterate_batches(inst, 8, 0, epochs=2))
    assert len(batches) == 2 * (len(inst) // 8) and all(len(b) == 8 for b in batches)
    again = list(iterate_batches(inst, 8, np.random.default_rng(5), epochs=1))
    assert len(again) == len(inst) // 8
    assert inst.select(batches[0]).input_ids.shape == (8, 128)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        BatchIterator(5, 8, seed=0)
