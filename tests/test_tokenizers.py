"""Tokenizers: unit tests on tiny generated vocabularies, parity with transformers on real corpora.

The parity tests are the point: the pretraining data must tokenize exactly as
`transformers.BertTokenizer` / `AlbertTokenizer` would, or checkpoints trained
here would not line up with Hugging Face vocabularies.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import subprocess
import sys
import unicodedata

import pytest

from bert_jax.data.tokenizers import (
    SentencePieceTokenizer,
    WordPieceTokenizer,
    expand_glob,
    load_tokenizer,
    train_sentencepiece,
)
from bert_jax.errors import ConfigError

PARITY_LINES = 2000
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", ",", "!", ".", "'", "$", "[", "]", "un", "##aff",
    "##able", "cafe", "中", "文", "the", "run", "##ning", "##s", "a", "σ", "##σ", "ς",
]  # fmt: skip
WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex",
    "nimble", "jackdaws", "and", "zebras", "graze", "under", "bright", "yellow", "skies", "near", "ancient", "stone",
    "bridges", "crossing", "rivers",
]  # fmt: skip
# Strings that exercise each normalisation rule, compared with transformers on the tiny vocab / model.
TRICKY = [
    "Hello, WORLD!  unaffable café 中文 xyz",
    "run[MASK]ning [mask] [UNK]x [CLS][SEP]",
    "tabs\tand\nnewlines\r\x00nul\ufffd \x1b[33mcolour\x1b[m \u200bzero-width",
    "ΣΑΣ σας Crème BRÛLÉE naïve Ångström İstanbul",
    "$5.00 'quoted' ``double'' (a) [b] {c} a--b ...",
    "ｆｕｌｌ　ｗｉｄｔｈ！ non\u00a0breaking \u2028line\u2029para",
    "1,000 9,5 a▁b a▁▁b ▁lead <unk> <pad> [PAD]",
    "日本語のテキスト 한국어 텍스트 emoji 😀👍🏽",
    "",
    "   ",
]


# ---------------------------------------------------------------------------------------------------------------
# Helpers and fixtures
# ---------------------------------------------------------------------------------------------------------------


def write_lines(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(n)]


def first_mismatch(lines: list[str], ours: list[list[int]], theirs: list[list[int]], to_tokens) -> str | None:
    """A readable report of the first line whose ids differ, or None when all agree."""
    for i, (line, a, b) in enumerate(zip(lines, ours, theirs, strict=True)):
        if a != b:
            return f"line {i}: {line[:200]!r}\n  ours:         {to_tokens(a)[:60]}\n  transformers: {to_tokens(b)[:60]}"
    return None


def read_lines(paths: list[str], limit: int) -> list[str]:
    """The first `limit` non-empty lines of `paths`, skipping fortune-file '%' separators."""
    lines = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line.strip() and line.strip() != "%":
                    lines.append(line)
                    if len(lines) == limit:
                        return lines
    return lines


def model_without_prefix(path: str) -> bytes:
    """A sentencepiece model's bytes with the `model_prefix` it stores (its output path) blanked."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    proto.trainer_spec.model_prefix = ""
    return proto.SerializeToString()


def corpus(data_dir: str, name: str) -> list[str]:
    if name == "wikitext-2":
        paths = [os.path.join(data_dir, "wikitext-2", "valid.txt")]
    else:  # fortunes/zh is a folder of fortune files ('%' between fortunes)
        paths = sorted(glob.glob(os.path.join(data_dir, "fortunes", "zh", "*")))
    lines = read_lines(paths, PARITY_LINES)
    assert len(lines) == PARITY_LINES, f"{name}: only {len(lines)} non-empty lines in {paths}"
    return lines


def albert_reference(model_path: str, folder, **options):
    """transformers 5's AlbertTokenizer for a sentencepiece model, built the way that works in v5.

    - `AlbertTokenizer(model_path)` no longer reads the file (the first
      argument is now a vocab list, and `vocab_file=` is ignored outside
      `from_pretrained`), so the model is linked into a folder as spiece.model.
    - Its default "[CLS]"/"[SEP]"/"[MASK]" names must exist in the model or
      construction fails (and bos/eos defaults are appended as new ids), so
      models without them get their own names, as SentencePieceTokenizer does.
    - It hard-codes the unknown id to 1 (ALBERT's layout): for a model whose
      '<unk>' is elsewhere (XLNet: 0) unknown characters would come out as
      the id of '<s>'. The backend's Unigram model is rebuilt from the same
      pieces and scores with the real unknown id; nothing else changes.
    """
    transformers = pytest.importorskip("transformers")
    from tokenizers.models import Unigram

    ours = SentencePieceTokenizer(model_path, **options)
    cls, sep, mask = ours.convert_ids_to_tokens([ours.cls_id, ours.sep_id, ours.mask_id])
    names = {"cls_token": cls, "sep_token": sep, "mask_token": mask, "bos_token": cls, "eos_token": sep}
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "spiece.model")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(model_path), link)
    reference = transformers.AlbertTokenizer.from_pretrained(str(folder), **options, **names)
    assert len(reference) == ours.vocab_size, "the reference appended tokens the model does not have"
    if ours.unk_id != 1:
        pieces = json.loads(reference.backend_tokenizer.to_str())["model"]["vocab"]
        reference.backend_tokenizer.model = Unigram([tuple(p) for p in pieces], unk_id=ours.unk_id, byte_fallback=False)
    return ours, reference


@pytest.fixture(scope="module")
def tiny_vocab(tmp_path_factory) -> str:
    return write_lines(tmp_path_factory.mktemp("wordpiece") / "vocab.txt", TINY_VOCAB)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> str:
    """Generated sentences plus the tricky strings, so the model has pieces for their characters too."""
    return write_lines(tmp_path_factory.mktemp("corpus") / "text.txt", sentences(400) + TRICKY * 5 + ["", "   "])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, corpus_file) -> str:
    return train_sentencepiece([corpus_file], 200, str(tmp_path_factory.mktemp("spm") / "tiny"), character_coverage=1.0)


# ---------------------------------------------------------------------------------------------------------------
# WordPiece, no data needed
# ---------------------------------------------------------------------------------------------------------------


def test_wordpiece_splits_punctuation_accents_cjk_and_unknown_words(tiny_vocab):
    tok = WordPieceTokenizer(tiny_vocab)
    tokens = tok.tokenize("Hello, WORLD!  Unaffable café 中文 xyz $")
    assert tokens == ["hello", ",", "world", "!", "un", "##aff", "##able", "cafe", "中", "文", "[UNK]", "$"]
    ids = tok.encode("Hello, WORLD!  Unaffable café 中文 xyz $")
    assert tok.word_starts(ids) == [not t.startswith("##") for t in tokens]
    assert tok.decode(ids) == "hello , world ! unaffable cafe 中 文 [UNK] $"
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == {0, 1, 2, 3, 4} and tok.vocab_size == len(TINY_VOCAB)


def test_wordpiece_matches_specials_literally_and_lowers_sigma_without_context(tiny_vocab):
    tok = WordPieceTokenizer(tiny_vocab)
    assert tok.tokenize("the[MASK]running [mask]") == ["the", "[MASK]", "run", "##ning", "[", "[UNK]", "]"]
    assert tok.tokenize("ΣΣ") == ["σ", "##σ"]  # `tokenizers` lowers char by char: never the final 'ς'
    assert tok.encode("") == [] and tok.encode(" \t\n") == []


def test_wordpiece_options(tiny_vocab):
    assert WordPieceTokenizer(tiny_vocab, do_lower_case=False).tokenize("Hello hello") == ["[UNK]", "hello"]
    assert WordPieceTokenizer(tiny_vocab, strip_accents=False).tokenize("café") == ["[UNK]"]
    assert WordPieceTokenizer(tiny_vocab, tokenize_chinese_chars=False).tokenize("中文") == ["[UNK]"]
    assert WordPieceTokenizer(tiny_vocab, max_input_chars_per_word=4).tokenize("hello runs") == ["[UNK]", "run", "##s"]


def test_wordpiece_matches_transformers_on_tricky_text(tiny_vocab):
    transformers = pytest.importorskip("transformers")
    for lower in (True, False):
        ours = WordPieceTokenizer(tiny_vocab, do_lower_case=lower)
        reference = transformers.BertTokenizer(tiny_vocab, do_lower_case=lower)
        theirs = [reference.encode(t, add_special_tokens=False) for t in TRICKY]
        mismatch = first_mismatch(TRICKY, [ours.encode(t) for t in TRICKY], theirs, ours.convert_ids_to_tokens)
        assert mismatch is None, f"do_lower_case={lower}: {mismatch}"


@pytest.mark.parametrize("lower", [True, False])
def test_wordpiece_matches_tokenizers_on_every_code_point(tiny_vocab, lower):
    """Normalisation and pre-tokenization equal `tokenizers`' BERT ones for each Unicode character."""
    tokenizers = pytest.importorskip("tokenizers")
    normalizer = tokenizers.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lower)
    pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    ours = WordPieceTokenizer(tiny_vocab, do_lower_case=lower)
    # Known gaps (see the module's tables): letters Python 3.11 does not know cannot be lower-cased like Rust does.
    unknown_to_python = {"Cn", "Cs"} if lower else {"Cs"}
    code_points = [c for c in range(1, 0x110000) if unicodedata.category(chr(c)) not in unknown_to_python]
    code_points.remove(0x11938)  # NFD differs (Dives Akuru); see the module's comment
    for i in range(0, len(code_points), 8192):
        text = " ".join(f"x{chr(c)}x" for c in code_points[i : i + 8192])
        expected = [word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        got = ours.basic_tokenize(text)
        if got != expected:
            diff = next(j for j, (a, b) in enumerate(zip(got + [""], expected + [""], strict=False)) if a != b)
            pytest.fail(
                f"code points from U+{code_points[i]:04X}: ours {got[diff : diff + 3]} vs {expected[diff : diff + 3]}"
            )


def test_wordpiece_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="missing-vocab.txt.*does not exist"):
        WordPieceTokenizer(str(tmp_path / "missing-vocab.txt"))
    with pytest.raises(ConfigError, match="is empty"):
        WordPieceTokenizer(write_lines(tmp_path / "empty.txt", []))
    with pytest.raises(ConfigError, match=r"lacks the special tokens \['\[MASK\]'\]"):
        WordPieceTokenizer(write_lines(tmp_path / "nomask.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]))


# ---------------------------------------------------------------------------------------------------------------
# SentencePiece, no data needed
# ---------------------------------------------------------------------------------------------------------------


def test_trained_model_has_albert_layout(tiny_model):
    tok = SentencePieceTokenizer(tiny_model)
    assert tok.vocab_size == 200
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.convert_ids_to_tokens(range(5)) == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.special_ids == {0, 1, 2, 3, 4}


def test_sentencepiece_round_trip_and_word_starts(tiny_model):
    tok = SentencePieceTokenizer(tiny_model)
    for text in sentences(20, seed=1):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        starts = tok.word_starts(ids)
        words = text.rstrip(".").split()
        assert sum(starts) == len(words) + 1, (tok.convert_ids_to_tokens(ids), starts)  # the final '.' is a word
        assert starts[0]


def test_sentencepiece_matches_special_pieces_literally(tiny_model):
    tok = SentencePieceTokenizer(tiny_model)
    ids = tok.encode("the [MASK] fox<unk>[SEP]")
    assert tok.mask_id in ids and tok.unk_id in ids and ids[-1] == tok.sep_id
    assert tok.encode("") == [] and tok.encode("  \t ") == []


def test_sentencepiece_matches_albert_tokenizer_on_trained_model(tiny_model, tmp_path):
    for options in ({"do_lower_case": False, "keep_accents": True}, {"do_lower_case": True, "keep_accents": False}):
        ours, reference = albert_reference(tiny_model, tmp_path / "hf", **options)
        texts = TRICKY + sentences(50, seed=2)
        theirs = [reference.encode(t, add_special_tokens=False) for t in texts]
        mismatch = first_mismatch(texts, [ours.encode(t) for t in texts], theirs, ours.convert_ids_to_tokens)
        assert mismatch is None, f"{options}: {mismatch}"


def test_training_is_deterministic_and_skips_undecodable_lines(tmp_path, caplog):
    path = tmp_path / "mixed.txt"
    path.write_bytes("\n".join(sentences(300)).encode() + b"\nbroken \xff\xfe bytes\n\n")
    with caplog.at_level(logging.WARNING, logger="bert_jax.data.tokenizers"):
        first = train_sentencepiece([str(path)], 80, str(tmp_path / "a"), seed=3)
    assert "skipped 1 lines that are not valid UTF-8" in caplog.text
    second = train_sentencepiece([str(path)], 80, str(tmp_path / "b"), seed=3)
    assert model_without_prefix(first) == model_without_prefix(second)


def test_training_errors(tmp_path, corpus_file):
    with pytest.raises(ConfigError, match="no input files"):
        train_sentencepiece([], 100, str(tmp_path / "m"))
    with pytest.raises(ConfigError, match="nope.txt.*does not exist"):
        train_sentencepiece([str(tmp_path / "nope.txt")], 100, str(tmp_path / "m"))
    with pytest.raises(ConfigError, match="no non-empty UTF-8 lines"):
        train_sentencepiece([write_lines(tmp_path / "blank.txt", ["", "  "])], 100, str(tmp_path / "m"))
    with pytest.raises(ConfigError, match="change vocab_size"):
        train_sentencepiece([corpus_file], 50_000, str(tmp_path / "m"))
    with pytest.raises(ConfigError, match="matches no file"):
        expand_glob(str(tmp_path / "*.nothing"))


def test_model_without_special_pieces_is_rejected(tmp_path, corpus_file):
    spm = pytest.importorskip("sentencepiece")
    prefix = str(tmp_path / "plain")
    spm.SentencePieceTrainer.train(input=corpus_file, model_prefix=prefix, vocab_size=200, minloglevel=2)
    with pytest.raises(ConfigError, match=r"none of the pieces \['<pad>', '\[PAD\]'\]"):
        SentencePieceTokenizer(prefix + ".model")


def test_load_tokenizer_picks_the_kind_from_the_path(tmp_path, tiny_vocab, tiny_model):
    assert isinstance(load_tokenizer(tiny_model), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(tiny_vocab, do_lower_case=False), WordPieceTokenizer)
    assert isinstance(load_tokenizer(os.path.dirname(tiny_vocab)), WordPieceTokenizer)
    folder = tmp_path / "spm_folder"
    folder.mkdir()
    os.symlink(tiny_model, folder / "spiece.model")
    assert isinstance(load_tokenizer(str(folder), do_lower_case=True), SentencePieceTokenizer)
    with pytest.raises(ConfigError, match="missing.model.*does not exist"):
        load_tokenizer(str(tmp_path / "missing.model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds none of"):
        load_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="takes no option"):
        load_tokenizer(tiny_model, strip_accents=True)
    (tmp_path / "garbage.model").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="garbage.model' is not a SentencePiece model"):
        load_tokenizer(str(tmp_path / "garbage.model"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bert_jax.data.tokenizers", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_trains_and_reports(tmp_path, corpus_file):
    prefix = tmp_path / "cli" / "spiece"
    result = run_cli(
        "train",
        f"--input={os.path.dirname(corpus_file)}/*.txt",
        "--vocab_size=150",
        f"--model_prefix={prefix}",
        "--character_coverage=1.0",
    )
    assert result.returncode == 0, result.stderr
    assert f"model: {prefix}.model" in result.stdout
    assert "vocab_size: 150" in result.stdout
    rate = float(result.stdout.split("unknown_rate: ")[1].split()[0])
    assert 0 < rate < 0.01  # the tricky lines spell out "<unk>" literally
    assert os.path.isfile(f"{prefix}.model")


def test_cli_glob_matching_nothing_is_a_clear_error(tmp_path):
    result = run_cli("train", f"--input={tmp_path}/*.txt", "--vocab_size=90", f"--model_prefix={tmp_path}/m")
    assert result.returncode == 2
    assert "matches no file" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Parity with transformers on real corpora ($BERT_JAX_DATA)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wikitext-2", "fortunes-zh"])
def test_wordpiece_matches_bert_tokenizer(data_dir, name):
    transformers = pytest.importorskip("transformers")
    vocab = os.path.join(data_dir, "tokenizers", "bert-base-uncased-vocab.txt")
    lines = corpus(data_dir, name)
    ours = WordPieceTokenizer(vocab, do_lower_case=True)
    theirs = transformers.BertTokenizer(vocab, do_lower_case=True)(lines, add_special_tokens=False)["input_ids"]
    mismatch = first_mismatch(lines, [ours.encode(line) for line in lines], theirs, ours.convert_ids_to_tokens)
    assert mismatch is None, mismatch


@pytest.mark.parametrize("name", ["wikitext-2", "fortunes-zh"])
def test_sentencepiece_matches_albert_tokenizer(data_dir, name, tmp_path):
    model = os.path.join(data_dir, "tokenizers", "xlnet-cased-spiece.model")
    lines = corpus(data_dir, name)
    ours, reference = albert_reference(model, tmp_path / "hf", do_lower_case=False, keep_accents=True)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (5, 0, 3, 4, 6)  # XLNet's names
    theirs = reference(lines, add_special_tokens=False)["input_ids"]
    mismatch = first_mismatch(lines, [ours.encode(line) for line in lines], theirs, ours.convert_ids_to_tokens)
    assert mismatch is None, mismatch


def test_real_vocabularies_match_transformers_on_tricky_text(data_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = os.path.join(data_dir, "tokenizers", "bert-base-uncased-vocab.txt")
    ours = WordPieceTokenizer(vocab)
    theirs = [transformers.BertTokenizer(vocab).encode(t, add_special_tokens=False) for t in TRICKY]
    mismatch = first_mismatch(TRICKY, [ours.encode(t) for t in TRICKY], theirs, ours.convert_ids_to_tokens)
    assert mismatch is None, mismatch
    model = os.path.join(data_dir, "tokenizers", "xlnet-cased-spiece.model")
    for options in ({"do_lower_case": False, "keep_accents": True}, {"do_lower_case": True, "keep_accents": False}):
        ours, reference = albert_reference(model, tmp_path / "hf", **options)
        theirs = [reference.encode(t, add_special_tokens=False) for t in TRICKY]
        mismatch = first_mismatch(TRICKY, [ours.encode(t) for t in TRICKY], theirs, ours.convert_ids_to_tokens)
        assert mismatch is None, f"{options}: {mismatch}"
