"""ERNIE knowledge masking and Chinese whole-word masking: units at three levels, masked whole.

Synthetic tests pin the unit levels and the per-row level draw; the Chinese
tests run on the fortunes' Chinese texts ($BERT_JAX_DATA/fortunes/zh) with
jieba as the segmenter and a character WordPiece vocabulary built from the
text (Chinese BERT's layout: every CJK character its own token). Rates are
checked to 5 binomial standard deviations, sqrt(p (1 - p) / n) * 5, as in
tests/test_masking.py; the seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import bert_jax
from bert_jax.data import sources
from bert_jax.data.knowledge_units import KnowledgeUnits, _is_cjk_char, parse_level_probs
from bert_jax.data.pipeline import build_pretraining_data
from bert_jax.data.pretraining import create_instances
from bert_jax.data.tokenizers import WORDPIECE_SPECIALS, WordPieceTokenizer
from bert_jax.errors import ConfigError
from bert_jax.objectives.masking import mask_batch

LEXICON = "李白\tPER\n杜甫\tPER\n苏轼\tPER\n王维\tPER\n长安\tLOC\n自由软件\tphrase\n操作系统\n明月\tphrase\n春风\n"
ENTITIES = ("李白", "杜甫", "苏轼", "王维", "长安")
PHRASES = ("自由软件", "操作系统", "明月", "春风")
WORDS = ["i", "love", "new", "york", "city", "the", "big", "apple", ",", ".", "##s"]


def five_sigma(p: float, n: int) -> float:
    return 5 * np.sqrt(p * (1 - p) / n)


def write_vocab(path, words) -> WordPieceTokenizer:
    """A WordPiece vocab of the given words/characters, '##' forms of non-CJK ones so any word splits."""
    chars = sorted(set(words))
    tokens = [*WORDPIECE_SPECIALS, *chars, *("##" + c for c in chars if not _is_cjk_char(c[0]))]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return WordPieceTokenizer(str(path))


def selected(out, shape) -> np.ndarray:
    sel = np.zeros(shape, bool)
    rows, slots = np.nonzero(out["masked_weights"])
    sel[rows, out["masked_positions"][rows, slots]] = True
    return sel


def unit_ids(starts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[B, L] unit number of each candidate token (a unit also starts right after a special token)."""
    before = np.zeros_like(candidates)
    before[:, 1:] = candidates[:, :-1]
    return np.cumsum(candidates & (starts | ~before), axis=1)


def assert_whole_units(sel, starts, candidates) -> None:
    """Every chosen token's whole unit is chosen (special tokens excluded)."""
    units = unit_ids(starts, candidates)
    for r in range(len(sel)):
        chosen = np.unique(units[r][sel[r]])
        member = np.isin(units[r], chosen) & candidates[r]
        np.testing.assert_array_equal(sel[r], member, err_msg=f"row {r}: a unit is only partly masked")


# --------------------------------------------------------------------------------------------------------------
# Without data: levels of units, the per-row level draw
# --------------------------------------------------------------------------------------------------------------


def test_units_nest_words_phrases_and_entities(tmp_path):
    tokenizer = write_vocab(tmp_path / "vocab.txt", WORDS)
    (tmp_path / "lex.txt").write_text("New York\tLOC\nbig apple\n# a comment\nthe big apple city\tphrase\n")
    units = KnowledgeUnits(tokenizer, lexicon=str(tmp_path / "lex.txt"))
    ids = tokenizer.encode("I love New York, the big apples. The big apple city!")
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:12] == ["i", "love", "new", "york", ",", "the", "big", "apple", "##s", ".", "the", "big"]
    levels = dict(enumerate(units(ids).tolist()))
    # 'york' continues the entity 'new york' (a unit only at the basic and phrase levels); '##s' starts nothing;
    # 'big apple' needs whole words, so 'big apples' does not match; the longest entry wins at 'the big apple city'.
    assert [levels[i] for i in range(10)] == [2, 2, 2, 1, 2, 2, 2, 2, -1, 2]
    assert [levels[i] for i in range(10, len(ids))] == [2, 0, 0, 0, 2]  # '!' is unknown to this vocab: [UNK]


def test_level_probs_parse_and_errors():
    assert parse_level_probs("basic=0.5,phrase=0.25,entity=0.25") == (0.5, 0.25, 0.25)
    assert parse_level_probs("phrase=1") == (0.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="unknown level 'word'"):
        parse_level_probs("word=1")
    with pytest.raises(ConfigError, match="summing to 1"):
        parse_level_probs("basic=0.5")


def test_missing_jieba_names_the_extra(monkeypatch, tmp_path):
    tokenizer = write_vocab(tmp_path / "vocab.txt", ["a"])
    monkeypatch.setitem(sys.modules, "jieba", None)  # import jieba now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "bert_jax\[chinese\]"'):
        KnowledgeUnits(tokenizer, segmenter="jieba")


def test_each_row_masks_whole_units_of_one_level_drawn_by_the_probabilities():
    """Rows of 10 entities = 20 phrases = 40 words (1 token each): the masked pattern tells the row's level.

    Budget round(0.15 * 40) = 6: an entity row masks one 4-token entity, a
    phrase row three aligned pairs, a basic row six single tokens.
    """
    b, n = 6000, 40
    ids = np.concatenate([np.full((b, 1), 1), np.random.default_rng(0).integers(5, 100, (b, n)), np.full((b, 1), 2)], 1)
    levels = np.tile(np.array([2, 0, 1, 0]), n // 4)
    units = np.concatenate([np.full((b, 1), -1), np.tile(levels, (b, 1)), np.full((b, 1), -1)], 1).astype(np.int8)
    probs = (0.3, 0.2, 0.5)
    out = mask_batch(
        ids, rng=np.random.default_rng(1), vocab_size=100, mask_id=3, special_ids={0, 1, 2, 3, 4},
        max_predictions=20, scheme="knowledge", unit_starts=units, unit_level_probs=probs,
    )  # fmt: skip
    sel = selected(out, ids.shape)[:, 1:-1]
    count = sel.sum(1)
    assert set(count.tolist()) <= {4, 6}
    entity = count == 4
    pairs = sel.reshape(b, n // 2, 2)
    phrase = ~entity & np.all(pairs[..., 0] == pairs[..., 1], axis=1)
    quads = sel.reshape(b, n // 4, 4)
    assert np.all(quads[entity].all(-1) | ~quads[entity].any(-1)), "an entity row masked a partial entity"
    observed = (1 - (entity | phrase).mean(), phrase.mean(), entity.mean())
    for p, o in zip(probs, observed, strict=True):
        # a basic row whose 6 tokens happen to form 3 aligned pairs reads as a phrase row: rare (C(20,3)/C(40,6) < 3e-4)
        assert abs(o - p) < five_sigma(p, b) + 3e-4, (observed, probs)


# --------------------------------------------------------------------------------------------------------------
# Chinese (fortunes/zh) with jieba
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jieba():
    return pytest.importorskip("jieba", reason='Chinese word segmentation needs pip install "bert_jax[chinese]"')


@pytest.fixture(scope="module")
def zh_documents(data_dir) -> list[list[str]]:
    """Every Tang and Song poem plus 300 seeded Chinese fortunes (about 80k characters)."""
    folder = os.path.join(data_dir, "fortunes", "zh")
    poems = sources.read_documents(sources.expand_paths(os.path.join(folder, "[ts]*.txt")), "fortunes")[0]
    quotes = sources.read_documents([os.path.join(folder, "chinese.txt")], "fortunes")[0]
    pick = np.random.default_rng(0).choice(len(quotes), 300, replace=False)
    documents = poems + [quotes[i] for i in sorted(pick)]
    assert not any("\x1b" in s or s == "%" for doc in documents for s in doc), "fortune format left codes or '%'"
    return documents


@pytest.fixture(scope="module")
def zh_tokenizer(zh_documents, tmp_path_factory) -> WordPieceTokenizer:
    chars = {c for doc in zh_documents for s in doc for c in s.lower() if not c.isspace()}
    return write_vocab(tmp_path_factory.mktemp("zh") / "vocab.txt", chars)


@pytest.fixture(scope="module")
def zh_instances(jieba, zh_documents, zh_tokenizer, tmp_path_factory):
    lexicon = tmp_path_factory.mktemp("lex") / "lexicon.txt"
    lexicon.write_text(LEXICON, encoding="utf-8")
    units = KnowledgeUnits(zh_tokenizer, segmenter="jieba", lexicon=str(lexicon))
    docs = [[zh_tokenizer.encode(s) for s in doc] for doc in zh_documents]
    return create_instances(
        docs, max_seq_length=128, pair_objective="nsp", rng=np.random.default_rng(0), cls_id=zh_tokenizer.cls_id,
        sep_id=zh_tokenizer.sep_id, pad_id=zh_tokenizer.pad_id, word_start_fn=zh_tokenizer.word_starts,
        unit_start_fn=units,
    )  # fmt: skip


def zh_mask(tokenizer, instances, seed, **kw):
    return mask_batch(
        instances.input_ids, rng=np.random.default_rng(seed), vocab_size=tokenizer.vocab_size,
        mask_id=tokenizer.mask_id, special_ids=tokenizer.special_ids, max_predictions=20,
        pad_id=tokenizer.pad_id, **kw,
    )  # fmt: skip


def test_chinese_units_are_jiebas_words(jieba, zh_documents, zh_tokenizer):
    """Phrase-level starts (no lexicon) fall exactly on the first character of each of jieba's words."""
    units = KnowledgeUnits(zh_tokenizer, segmenter="jieba")
    sentences = [s for doc in zh_documents for s in doc]
    compared = agree = 0
    for sentence in sentences:
        ids = zh_tokenizer.encode(sentence)
        per_word = [zh_tokenizer.encode(w) for w in jieba.lcut(sentence)]
        if sum(per_word, []) != ids:
            continue  # jieba cut a WordPiece word (e.g. full-width digits '９４６'): the encodings differ
        expected = [i == 0 for w in per_word for i in range(len(w))]
        compared += 1
        agree += (units(ids) >= 1).tolist() == expected
    print(f"\njieba words = phrase units in {agree}/{compared} of {len(sentences)} sentences")
    # Units see the text the tokens spell: lower-cased and without spaces between Chinese characters, which can
    # change jieba's segmentation of a handful of sentences.
    assert compared > 0.9 * len(sentences) and agree > 0.99 * compared


def test_chinese_whole_word_masking(zh_tokenizer, zh_instances):
    """Chinese-BERT-wwm: masked spans are whole jieba words and the masked share stays at 15%."""
    words = zh_instances.unit_starts >= 1  # what the pipeline passes as word_starts with a segmenter
    out = zh_mask(zh_tokenizer, zh_instances, 0, scheme="whole_word", word_starts=words)
    ids = zh_instances.input_ids
    candidates = ~np.isin(ids, list(zh_tokenizer.special_ids))
    sel = selected(out, ids.shape)
    assert_whole_units(sel, words, candidates)
    multi = np.diff(np.flatnonzero(np.append(words[candidates], True))) > 1
    assert multi.mean() > 0.3, "jieba should give many multi-character words"
    counted = (ids != zh_tokenizer.pad_id).sum()
    share = sel.sum() / counted
    print(f"\nwhole-word masked share {share:.4f} of {counted} tokens ({len(ids)} rows); multi-char {multi.mean():.2f}")
    # The budget is round(0.15 n) per row; a word that would overrun what is left is skipped, so a row can end
    # up to a word short. Words average < 2 characters, so the share stays within 0.01 of 15%.
    assert abs(share - 0.15) < 0.01


@pytest.mark.parametrize(
    ("level", "entries", "probs"),
    [(2, ENTITIES, "entity=1"), (1, PHRASES, "phrase=1"), (0, ENTITIES + PHRASES, "basic=1")],
)
def test_lexicon_entries_are_masked_whole(zh_tokenizer, zh_instances, level, entries, probs):
    """At the entity (phrase) level every lexicon entity (phrase) is masked entirely or not at all; at the basic
    level (characters) they are not, which shows the level matters."""
    kw = {"unit_starts": zh_instances.unit_starts, "unit_level_probs": parse_level_probs(probs)}
    out = zh_mask(zh_tokenizer, zh_instances, 1, scheme="knowledge", **kw)
    ids = zh_instances.input_ids
    sel = selected(out, ids.shape)
    candidates = ~np.isin(ids, list(zh_tokenizer.special_ids))
    assert_whole_units(sel, zh_instances.unit_starts >= level, candidates)
    whole = partial = total = 0
    for entry in entries:
        pattern = np.array(zh_tokenizer.encode(entry))
        windows = np.lib.stride_tricks.sliding_window_view(ids, len(pattern), axis=1)
        rows, cols = np.nonzero(np.all(windows == pattern, axis=-1))
        hits = sel[rows[:, None], cols[:, None] + np.arange(len(pattern))]
        total += len(rows)
        whole += hits.all(1).sum()
        partial += (hits.any(1) & ~hits.all(1)).sum()
    print(f"\n{probs}: {total} occurrences, {whole} masked whole, {partial} partly")
    assert total >= 90
    if level > 0:  # about 15% of the occurrences are chosen (measured 30/203 entities, 24/96 phrases)
        assert partial == 0 and whole >= 10
    else:  # characters: a 2-character name is cut with probability ~2 * 0.15 * 0.85 (measured 79 of 299)
        assert partial >= 20


def test_pipeline_builds_knowledge_batches(jieba, zh_documents, zh_tokenizer, tmp_path):
    """ernie_tiny on Chinese fortunes: units reach the instances, and batches mask whole units."""
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n%\n".join("\n".join(doc) for doc in zh_documents[:200]) + "\n", encoding="utf-8")
    (tmp_path / "lexicon.txt").write_text(LEXICON, encoding="utf-8")
    config = bert_jax.load_config(
        "configs/ernie_tiny.py",
        {
            "data.source": "text", "data.path": str(corpus), "data.line_format": "fortunes",
            "tokenizer.path": zh_tokenizer.vocab_path, "model.vocab_size": zh_tokenizer.vocab_size,
            "masking.lexicon": str(tmp_path / "lexicon.txt"), "masking.unit_level_probs": "entity=1",
        },
    )  # fmt: skip
    data = build_pretraining_data(config, str(tmp_path))
    levels, counts = np.unique(data.train.unit_starts, return_counts=True)
    # 1 (a phrase start inside an entity) is absent: the lexicon's entities are added to jieba's dictionary, so
    # each is one jieba word and no entity spans several phrases.
    assert {-1, 0, 2} <= set(levels.tolist()), dict(zip(levels.tolist(), counts.tolist(), strict=True))
    index = np.arange(min(64, len(data.train)))
    batch = data.train_batch(index, step=0, epoch=0)
    sel = selected(batch, batch["input_ids"].shape)
    candidates = ~np.isin(data.train.input_ids[index], list(zh_tokenizer.special_ids))
    assert sel.sum() > 0
    assert_whole_units(sel, data.train.unit_starts[index] >= 2, candidates)
