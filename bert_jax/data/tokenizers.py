"""Tokenizers for pretraining: BERT WordPiece and SentencePiece, id for id equal to `transformers` 5.

The data pipeline tokenizes whole corpora in-process and needs, besides ids,
which tokens start a whole word (for whole-word masking). Both tokenizers
here give exactly the ids `transformers.BertTokenizer` / `AlbertTokenizer`
give with `add_special_tokens=False`, so checkpoints trained here stay
interchangeable with Hugging Face ones; `tests/test_tokenizers.py` checks
that on real corpora and on every Unicode code point.

Train a SentencePiece model from the command line:

    python -m bert_jax.data.tokenizers train --input='corpus/*.txt' --vocab_size=30000 --model_prefix=out/spiece
"""

from __future__ import annotations

import argparse
import glob
import inspect
import logging
import os
import random
import re
import sys
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

from bert_jax import fileio
from bert_jax.errors import ConfigError

log = logging.getLogger(__name__)

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPIECE_SPECIALS = ("[CLS]", "[SEP]", "[MASK]")  # ALBERT's names; the trainer below puts them at ids 2, 3, 4
SPIECE_FALLBACKS = {"[CLS]": "<cls>", "[SEP]": "<sep>", "[MASK]": "<mask>"}  # XLNet-style models
SPIECE_WORD_BOUNDARY = "\u2581"  # '▁', SentencePiece's stand-in for a space

# SentencePiece piece types (sentencepiece_model.proto) that transformers turns into added tokens.
_UNKNOWN, _CONTROL = 2, 3
_UNKNOWN_PENALTY = 10.0  # an unknown character scores this far below the rarest piece (sentencepiece, tokenizers)
_WORD_CACHE_SIZE = 1 << 20
_JAMO = re.compile("([\u1100-\u11ff\ua960-\ua97f\ud7b0-\ud7ff])")  # conjoining Hangul jamo, one per match


class ModelInputs(NamedTuple):
    """One model row from `Tokenizer.build_inputs`: ids, token type ids, and where the second text starts
    (span tasks map positions in B back to its tokens; for one text it is the row's length)."""

    ids: list[int]
    token_type_ids: list[int]
    second_start: int


class Tokenizer(ABC):
    """What the data pipeline needs from a tokenizer, whatever its algorithm.

    `encode` never adds special tokens: instance building places [CLS]/[SEP]
    itself. `word_starts` marks tokens that begin a whole word so masking can
    cover all pieces of a word at once.
    """

    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    _splitter: _AddedTokenSplitter  # finds special / user-defined tokens written literally in the text

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added; literal special tokens map to their ids."""
        ids: list[int] = []
        for chunk, literal_id in self._splitter.split(text):
            if literal_id is None:
                ids.extend(self._encode_chunk(chunk))
            else:
                ids.append(literal_id)
        return ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text)` plus, per token, the [start, end) character span of `text` it came from.

        Span tasks (SQuAD) label answers by character offsets and must map
        predicted tokens back to the original text, whose characters the
        normalisation (lower-casing, accent stripping) changes.
        """
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        position = 0
        for chunk, literal_id in self._splitter.split(text):
            if literal_id is None:
                chunk_ids, chunk_offsets = self._encode_chunk_with_offsets(chunk)
                ids.extend(chunk_ids)
                offsets.extend((start + position, end + position) for start, end in chunk_offsets)
            else:
                ids.append(literal_id)
                offsets.append((position, position + len(chunk)))
            position += len(chunk)
        return ids, offsets

    def _encode_chunk_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Word-granular fallback: each whitespace-separated word is encoded alone and its tokens get its span.

        Gives `encode`'s ids for tokenizers that split at whitespace before
        anything else (SentencePiece here); subclasses that can say which
        characters each sub-word covers override it (WordPiece, byte-level BPE).
        """
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for match in re.finditer(r"\S+", text):
            word_ids = self._encode_chunk(match.group())
            ids.extend(word_ids)
            offsets.extend([match.span()] * len(word_ids))
        return ids, offsets

    @abstractmethod
    def _encode_chunk(self, text: str) -> list[int]:
        """Ids of text that holds no literal special token."""

    @abstractmethod
    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """The vocabulary strings of `ids`."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Readable text for `ids` (for logs and debugging; not guaranteed to invert `encode`)."""

    @abstractmethod
    def word_starts(self, ids: Iterable[int]) -> list[bool]:
        """True where a token begins a new whole word (special tokens count as words of their own)."""

    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text` as strings (the pieces behind `encode`)."""
        return self.convert_ids_to_tokens(self.encode(text))

    @property
    def special_ids(self) -> set[int]:
        """Ids that are never masked or predicted: padding, unknown and the structural tokens."""
        return {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}

    # The pair layout of the checkpoint family (`build_inputs`); subclasses of other families change these.
    pair_separators = 1  # [SEP]s between the two texts (RoBERTa: 2, `</s></s>`)
    second_token_type = 1  # the token type of the second text and its [SEP] (RoBERTa, one type only: 0)

    def build_inputs(self, ids_a: Sequence[int], ids_b: Sequence[int] | None = None) -> ModelInputs:
        """A model input of one text or a pair, laid out as the checkpoint family was trained on.

        BERT, ALBERT and ELECTRA: `[CLS] A [SEP] (B [SEP])`, token type 0 up to
        the first [SEP] and 1 after it (`transformers`'
        `build_inputs_with_special_tokens` / `create_token_type_ids_from_sequences`);
        RoBERTa's byte-level BPE: `<s> A </s></s> B </s>`, all type 0.
        """
        ids = [self.cls_id, *ids_a, self.sep_id]
        types = [0] * len(ids)
        if ids_b is None:
            return ModelInputs(ids, types, len(ids))
        first = [*ids, *[self.sep_id] * (self.pair_separators - 1)]
        second = [*ids_b, self.sep_id]
        types = [0] * len(first) + [self.second_token_type] * len(second)
        return ModelInputs(first + second, types, len(first))

    def num_special_tokens(self, pair: bool) -> int:
        """Tokens `build_inputs` adds to one text (pair=False) or to a pair: what truncation must leave room for."""
        return len(self.build_inputs([], [] if pair else None).ids)


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


class _CharTable(dict):
    """A `str.translate` table filled the first time each character is seen.

    Normalisation is per character, so caching the answer per code point makes
    whole-corpus tokenization run at C speed after a short warm-up, without
    building tables over all 1.1 million code points up front.
    """

    def __init__(self, fn: Callable[[str], str]):
        super().__init__()
        self._fn = fn

    def __missing__(self, code_point: int) -> str:
        value = self._fn(chr(code_point))
        self[code_point] = value
        return value


class _AddedTokenSplitter:
    """Cuts raw text at literal special tokens before any normalisation, as transformers does.

    transformers matches its added tokens (e.g. "[MASK]", "<unk>") on the raw
    text, leftmost-longest, and normalises only the text between them; a
    regex alternation with the longest tokens first gives the same matches.
    """

    def __init__(self, tokens: dict[str, int]):
        self._ids = tokens
        alternatives = sorted(tokens, key=lambda t: (-len(t), t))
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def split(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Yields (text, None) for ordinary chunks and (token, id) for matched added tokens."""
        if self._pattern is None:
            yield text, None
            return
        start = 0
        for match in self._pattern.finditer(text):
            if match.start() > start:
                yield text[start : match.start()], None
            yield match.group(), self._ids[match.group()]
            start = match.end()
        if start < len(text):
            yield text[start:], None


class _WordCache(dict):
    """Token ids per distinct word: corpora repeat words, so each is split once.

    Emptied when it reaches `_WORD_CACHE_SIZE` words, which bounds memory on
    corpora with many rare words at the cost of recomputing common ones.
    """

    def get_or_compute(self, word: str, compute: Callable[[str], list[int]]) -> list[int]:
        ids = self.get(word)
        if ids is None:
            if len(self) >= _WORD_CACHE_SIZE:
                self.clear()
            ids = self[word] = compute(word)
        return ids


def _require_file(path: str, what: str, fix: str) -> None:
    if not fileio.isfile(path):
        raise ConfigError(f"{what} {path!r} does not exist or is not a file; {fix}")


def _lowercase_char(char: str) -> str:
    """Lower-cases one character without context, like Rust's `char::to_lowercase` in `tokenizers`.

    Python's `str.lower` on a whole string turns a word-final capital sigma
    into 'ς'; `tokenizers` always gives 'σ', so lowering goes char by char.
    """
    return char.lower()


_LOWERCASE = _CharTable(_lowercase_char)


def _lowercase(text: str) -> str:
    return text.translate(_LOWERCASE)


# ---------------------------------------------------------------------------------------------------------------
# WordPiece (BERT)
# ---------------------------------------------------------------------------------------------------------------

# `tokenizers` (Rust) classifies characters with Unicode tables older than Python 3.11's (Unicode 14). These are
# the code points where the two disagree (mostly characters of scripts encoded since Unicode 10); without them
# text in those scripts would split or lose marks differently. Found by comparing with `tokenizers`'
# `BertNormalizer` / `BertPreTokenizer` on every code point, as tests/test_tokenizers.py does on each run. Known
# remaining differences: lower-casing of ~55 letters encoded after Unicode 14 (Python has no case data for them)
# and the NFD of U+11938 (Dives Akuru). Another Python's Unicode version may shift these; the test would say.
_CF_UNKNOWN_TO_RUST = ((0x0890, 0x0891), (0x08E2, 0x08E2), (0x110CD, 0x110CD), (0x13430, 0x13438))
_PUNCT_UNKNOWN_TO_RUST = (
    (0x061D, 0x061D), (0x09FD, 0x09FD), (0x0A76, 0x0A76), (0x0C77, 0x0C77), (0x0C84, 0x0C84), (0x1B7D, 0x1B7E),
    (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD), (0x10F55, 0x10F59), (0x10F86, 0x10F89),
    (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D, 0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9),
    (0x1183B, 0x1183B), (0x11944, 0x11946), (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C),
    (0x11A9E, 0x11AA2), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8), (0x11FFF, 0x11FFF),
    (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A), (0x16FE2, 0x16FE2), (0x1E95E, 0x1E95F),
)  # fmt: skip
_PUNCT_ONLY_IN_RUST = frozenset((0x166D, 0x111C9))  # were punctuation in older Unicode
_MN_UNKNOWN_TO_RUST = (
    (0x07FD, 0x07FD), (0x0898, 0x089F), (0x08CA, 0x08E1), (0x09FE, 0x09FE), (0x0AFA, 0x0AFF), (0x0B55, 0x0B55),
    (0x0C04, 0x0C04), (0x0C3C, 0x0C3C), (0x0D00, 0x0D00), (0x0D3B, 0x0D3C), (0x0D81, 0x0D81), (0x0EBA, 0x0EBA),
    (0x180F, 0x180F), (0x1885, 0x1886), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFB), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5),
    (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50),
    (0x10F82, 0x10F85), (0x11070, 0x11070), (0x11073, 0x11074), (0x110C2, 0x110C2), (0x111C9, 0x111C9),
    (0x111CF, 0x111CF), (0x1123E, 0x1123E), (0x1133B, 0x1133B), (0x11438, 0x1143F), (0x11442, 0x11444),
    (0x11446, 0x11446), (0x1145E, 0x1145E), (0x1182F, 0x11837), (0x11839, 0x1183A), (0x1193B, 0x1193C),
    (0x1193E, 0x1193E), (0x11943, 0x11943), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0),
    (0x11A01, 0x11A0A), (0x11A33, 0x11A38), (0x11A3B, 0x11A3E), (0x11A47, 0x11A47), (0x11A51, 0x11A56),
    (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A99), (0x11C30, 0x11C36), (0x11C38, 0x11C3D),
    (0x11C3F, 0x11C3F), (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6),
    (0x11D31, 0x11D36), (0x11D3A, 0x11D3A), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47),
    (0x11D90, 0x11D91), (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x16F4F, 0x16F4F),
    (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018),
    (0x1E01B, 0x1E021), (0x1E023, 0x1E024), (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE),
    (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A),
)  # fmt: skip
_MN_ONLY_IN_RUST = frozenset((0x1734,))  # a spacing mark (Mc) since Unicode 14
# Unicode's White_Space property (Rust's `char::is_whitespace`), stable since Unicode 6.3.
_WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
_SPACES = {ord(c): " " for c in _WHITESPACE}  # str.translate table: every White_Space character to ' '
# The CJK Unified Ideographs blocks BERT surrounds with spaces (Hangul and kana are not among them). One block
# starts at 0x2B920 where BERT's Python code says 0x2B820: `tokenizers` has it so, and its ids are the reference.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _in_ranges(code_point: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= code_point <= hi for lo, hi in ranges)


def _is_control(char: str) -> bool:
    """BERT's clean-up drops control, format and private-use characters (tab/newline/CR are whitespace)."""
    if char in "\t\n\r":
        return False
    category = unicodedata.category(char)
    if category == "Cf":
        return not _in_ranges(ord(char), _CF_UNKNOWN_TO_RUST)
    return category in ("Cc", "Co")


def _is_punctuation(char: str) -> bool:
    """BERT's punctuation: all ASCII non-letters/digits (so '$', '^', '`' too) plus Unicode category P*."""
    code_point = ord(char)
    if 33 <= code_point <= 47 or 58 <= code_point <= 64 or 91 <= code_point <= 96 or 123 <= code_point <= 126:
        return True
    if code_point in _PUNCT_ONLY_IN_RUST:
        return True
    return unicodedata.category(char).startswith("P") and not _in_ranges(code_point, _PUNCT_UNKNOWN_TO_RUST)


def _is_nonspacing_mark(char: str) -> bool:
    """The accents BERT strips after NFD: nonspacing marks (Mn), as `tokenizers`' Unicode tables list them."""
    code_point = ord(char)
    if code_point in _MN_ONLY_IN_RUST:
        return True
    return unicodedata.category(char) == "Mn" and not _in_ranges(code_point, _MN_UNKNOWN_TO_RUST)


def _is_cjk(char: str) -> bool:
    return _in_ranges(ord(char), _CJK_RANGES)


def _load_vocab(vocab_path: str) -> list[str]:
    """One token per line, trailing whitespace dropped (as the Rust WordPiece reader does)."""
    _require_file(vocab_path, "WordPiece vocab", "pass the vocab.txt of the model (one token per line)")
    with open(vocab_path, encoding="utf-8") as f:
        tokens = [line.rstrip() for line in f.read().splitlines()]
    if not tokens:
        raise ConfigError(f"WordPiece vocab {vocab_path!r} is empty; pass a vocab.txt with one token per line")
    return tokens


class WordPieceTokenizer(Tokenizer):
    """BERT's tokenizer: BasicTokenizer (clean, split CJK, lower-case, strip accents, split punctuation)
    followed by greedy longest-match-first WordPiece, [UNK] for words it cannot cover.

    The rules follow the `tokenizers` implementation behind transformers 5's
    `BertTokenizer` (not the older Python one): e.g. unassigned code points are
    kept rather than dropped, and a capital sigma always lowers to 'σ'.
    """

    def __init__(
        self,
        vocab_path: str,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
    ):
        self.vocab_path = vocab_path
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        self._tokens = _load_vocab(vocab_path)
        self._vocab = {token: i for i, token in enumerate(self._tokens)}  # a repeated token keeps its last id
        missing = [t for t in WORDPIECE_SPECIALS if t not in self._vocab]
        if missing:
            raise ConfigError(
                f"WordPiece vocab {vocab_path!r} lacks the special tokens {missing}; "
                f"BERT vocabularies list {list(WORDPIECE_SPECIALS)} (add them or use the model's own vocab.txt)"
            )
        self.vocab_size = len(self._tokens)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self._vocab[t] for t in WORDPIECE_SPECIALS)
        self._max_piece_chars = max(len(t) for t in self._tokens)
        self._splitter = _AddedTokenSplitter({t: self._vocab[t] for t in WORDPIECE_SPECIALS})
        self._clean = _CharTable(self._clean_char)
        self._drop_marks = _CharTable(lambda c: "" if _is_nonspacing_mark(c) else c)
        self._space_punct = _CharTable(lambda c: f" {c} " if _is_punctuation(c) else c)
        self._offset_chars = _CharTable(self._normalize_char)
        self._word_cache = _WordCache()
        self._starts = [not t.startswith("##") for t in self._tokens]

    def _clean_char(self, char: str) -> str:
        """Drops NUL, U+FFFD and control characters, turns whitespace into ' ', pads CJK ideographs with spaces."""
        if char in ("\x00", "\ufffd") or _is_control(char):
            return ""
        if char in _WHITESPACE:
            return " "
        if self.tokenize_chinese_chars and _is_cjk(char):
            return f" {char} "
        return char

    def basic_tokenize(self, text: str) -> list[str]:
        """BERT's BasicTokenizer on text with no special tokens in it: the words WordPiece then splits."""
        text = text.translate(self._clean)
        if self.strip_accents:
            text = unicodedata.normalize("NFD", text).translate(self._drop_marks)
        if self.do_lower_case:
            text = _lowercase(text)
        return text.translate(self._space_punct).split()

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first split of one word; the whole word is [UNK] if any part has no match."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = min(len(word), start + self._max_piece_chars)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self._vocab:
                    ids.append(self._vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk_id]
            start = end
        return ids

    def _encode_chunk(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self.basic_tokenize(text):
            ids.extend(self._word_cache.get_or_compute(word, self._wordpiece))
        return ids

    def _normalize_char(self, char: str) -> str:
        """`basic_tokenize`'s rewriting of one character (clean, NFD + drop marks, lower, space punctuation)."""
        text = char.translate(self._clean)
        if self.strip_accents:
            text = unicodedata.normalize("NFD", text).translate(self._drop_marks)
        if self.do_lower_case:
            text = _lowercase(text)
        return text.translate(self._space_punct)

    def _encode_chunk_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Sub-word spans: every step of `basic_tokenize` works character by character, so the normalised text
        is built per original character, remembering where each normalised character came from."""
        pieces = [self._offset_chars[ord(c)] for c in text]
        origin = [i for i, piece in enumerate(pieces) for _ in piece]
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for match in re.finditer(r"\S+", "".join(pieces)):
            word_start, word_end = match.span()
            word_ids = self._word_cache.get_or_compute(match.group(), self._wordpiece)
            if word_ids == [self.unk_id]:
                ids.append(self.unk_id)
                offsets.append((origin[word_start], origin[word_end - 1] + 1))
                continue
            cursor = word_start
            for token_id in word_ids:
                token = self._tokens[token_id]
                length = len(token) - 2 if cursor > word_start else len(token)  # '##' is no character of the text
                ids.append(token_id)
                offsets.append((origin[cursor], origin[cursor + length - 1] + 1))
                cursor += length
        return ids, offsets

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens joined by spaces with '##' continuations glued back on; padding is dropped."""
        ids = list(ids)
        tokens = [t for i, t in zip(ids, self.convert_ids_to_tokens(ids), strict=True) if i != self.pad_id]
        return " ".join(tokens).replace(" ##", "")

    def word_starts(self, ids: Iterable[int]) -> list[bool]:
        """Every token except '##' continuations starts a word."""
        return [self._starts[i] for i in ids]


# ---------------------------------------------------------------------------------------------------------------
# SentencePiece (ALBERT, XLNet, ...)
# ---------------------------------------------------------------------------------------------------------------


def _piece_types(model_path: str) -> list[int]:
    """Each piece's type (normal, unknown, control, user-defined, ...), read from the model's protobuf.

    The `sentencepiece` Python API reports control and unknown pieces but not
    user-defined ones, which transformers also cuts out of raw text.
    """
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:  # the generated module needs `protobuf`
        raise ConfigError(f"reading {model_path!r} needs the protobuf package ({e}); pip install protobuf") from e
    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    return [piece.type for piece in proto.pieces]


def _strip_accents(text: str) -> str:
    """NFKD, then drop combining marks (transformers' `NFKD` + `StripAccents` normalizers)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.category(c).startswith("M"))


def _metaspace_split(word: str) -> list[str]:
    """'▁' + word, cut before every '▁' (transformers' Metaspace): 'a▁▁b' -> ['▁a', '▁', '▁b']."""
    if word.startswith(SPIECE_WORD_BOUNDARY):
        word = word[1:]
    return [SPIECE_WORD_BOUNDARY + part for part in word.split(SPIECE_WORD_BOUNDARY)]


def _is_punctuation_piece(piece: str) -> bool:
    return bool(piece) and all(_is_punctuation(c) for c in piece)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model run the way transformers 5's `AlbertTokenizer` runs it.

    transformers 5 no longer calls sentencepiece: its `AlbertTokenizer` is a
    `tokenizers` pipeline converted from the .model file. What that pipeline
    does, and this class therefore does too:

    - Control and unknown pieces (e.g. "<unk>", "<mask>", "<eod>") and the
      special tokens are matched literally in the raw text first; the text
      between them is tokenized separately, each chunk with its own leading
      '▁'. User-defined pieces (XLNet's "(", ".", ...) are ordinary pieces
      that the Viterbi search below emits whole, as sentencepiece does: "(a)"
      gives '▁', '(', 'a', ')'. (transformers 5.0-5.24 split the raw text at
      user-defined pieces as well, giving '(', '▁a', ')'; 5.25 stopped.)
    - Each chunk: "``" and "''" become '"', optional NFKD accent stripping and
      lower-casing, then the model's own character map (sentencepiece's
      normalizer), a split into words at whitespace, '▁' before each word and
      a cut before every '▁', and per piece the best-scoring split into
      vocabulary pieces (unigram Viterbi), runs of unknown characters fused
      into one unknown token.
    - The Viterbi search is done here in Python, not by sentencepiece: the two
      implementations add scores in different orders and precisions (float32
      in sentencepiece, float64 in `tokenizers`), so near-ties such as
      'o'+'oo' against 'oo'+'o' can go either way. Mirroring the `tokenizers`
      search (float64, earliest-starting last piece wins a tie) makes the ids
      equal; words are cached, so corpora still tokenize quickly.
    - Unlike the old Python AlbertTokenizer, pieces such as '▁1990,' (digit
      then comma) are kept whole; transformers 5 dropped that re-splitting.

    One deliberate difference: transformers 5's AlbertTokenizer hard-codes the
    unknown id to 1 (ALBERT's layout), so for models whose '<unk>' is not id 1
    (XLNet's is 0) it emits id 1 for unknown characters. This class emits the
    model's real unknown id; the parity tests correct the reference for that.
    """

    def __init__(self, model_path: str, do_lower_case: bool = False, keep_accents: bool = True):
        _require_file(model_path, "SentencePiece model", "pass the .model file written by sentencepiece training")
        import sentencepiece as spm

        self.model_path = model_path
        self.do_lower_case = do_lower_case
        self.keep_accents = keep_accents
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(model_path)
            # Only the character map: whitespace is handled as transformers does, in _encode_chunk.
            self._normalizer = spm.SentencePieceNormalizer(
                model_file=model_path, add_dummy_prefix=False, escape_whitespaces=False, remove_extra_whitespaces=False
            )
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"{model_path!r} is not a SentencePiece model ({e}); pass a sentencepiece .model") from e
        self.vocab_size = self._sp.get_piece_size()
        self._pieces = [self._sp.id_to_piece(i) for i in range(self.vocab_size)]
        self._ids = {piece: i for i, piece in enumerate(self._pieces)}
        self._scores = [self._sp.get_score(i) for i in range(self.vocab_size)]
        self._unk_score = min(self._scores) - _UNKNOWN_PENALTY
        self._max_piece_chars = max(len(p) for p in self._pieces)
        self._word_cache = _WordCache()
        types = _piece_types(model_path)
        self.unk_id = self._sp.unk_id()
        self.pad_id = self._find_special("<pad>", "[PAD]")
        self.cls_id = self._find_special("[CLS]", SPIECE_FALLBACKS["[CLS]"])
        self.sep_id = self._find_special("[SEP]", SPIECE_FALLBACKS["[SEP]"])
        self.mask_id = self._find_special("[MASK]", SPIECE_FALLBACKS["[MASK]"])
        # transformers' added tokens: control and unknown pieces plus the pad/cls/sep/mask/unk tokens whatever
        # their type. User-defined pieces are ordinary pieces of the Unigram model (transformers >= 5.25).
        literal = {i for i, t in enumerate(types) if t in (_UNKNOWN, _CONTROL)} | super().special_ids
        self._control_ids = {i for i, t in enumerate(types) if t == _CONTROL}
        self._splitter = _AddedTokenSplitter({self._pieces[i]: i for i in literal})
        self._starts = [
            i in literal or piece.startswith(SPIECE_WORD_BOUNDARY) or _is_punctuation_piece(piece)
            for i, piece in enumerate(self._pieces)
        ]

    def _find_special(self, *names: str) -> int:
        for name in names:
            if name in self._ids:
                return self._ids[name]
        raise ConfigError(
            f"SentencePiece model {self.model_path!r} has none of the pieces {list(names)}; train it with "
            f"train_sentencepiece (which adds {list(SPIECE_SPECIALS)}) or pass control_symbols for them"
        )

    @property
    def special_ids(self) -> set[int]:
        """The structural ids plus every control piece (e.g. XLNet's '<eod>'), none of which text produces."""
        return super().special_ids | self._control_ids

    def _normalize(self, text: str) -> str:
        text = text.replace("``", '"').replace("''", '"')
        if not self.keep_accents:
            text = _strip_accents(text)
        if self.do_lower_case:
            text = _lowercase(text)
        return text

    def _viterbi(self, word: str) -> list[int]:
        """The highest-scoring split of '▁word' into pieces, as `tokenizers`' `Unigram.encode_optimized` finds it.

        Ties keep the first candidate seen (the path whose last piece starts
        earliest); a character no piece covers costs the unknown score; runs of
        unknown characters become one token.
        """
        n, lookup, piece_scores, unk = len(word), self._ids, self._scores, self.unk_id
        best = [0.0] * (n + 1)
        starts = [-1] * (n + 1)
        ids = [unk] * (n + 1)
        for start in range(n):
            base, covered = best[start], False
            for end in range(start + 1, min(n, start + self._max_piece_chars) + 1):
                piece_id = lookup.get(word[start:end])
                if piece_id is None:
                    continue
                covered = covered or end == start + 1
                score = piece_scores[piece_id] + base
                if starts[end] < 0 or score > best[end]:
                    best[end], starts[end], ids[end] = score, start, piece_id
            score = self._unk_score + base
            if not covered and (starts[start + 1] < 0 or score > best[start + 1]):
                best[start + 1], starts[start + 1], ids[start + 1] = score, start, unk
        return self._backtrack(word, starts, ids)

    def _backtrack(self, word: str, starts: list[int], ids: list[int]) -> list[int]:
        out: list[int] = []
        end, unknown_end = len(word), None
        while end > 0:
            if ids[end] == self.unk_id:
                unknown_end = unknown_end or end
            else:
                if unknown_end is not None:
                    out.append(self._ids.get(word[end:unknown_end], self.unk_id))
                    unknown_end = None
                out.append(ids[end])
            end = starts[end]
        if unknown_end is not None:
            out.append(self._ids.get(word[:unknown_end], self.unk_id))
        out.reverse()
        return out

    def _model_normalize(self, text: str) -> str:
        """The model's own character normalisation (e.g. NFKC), with conjoining Hangul jamo mapped one by one.

        transformers applies the model's character map per grapheme cluster,
        and clusters of 6 or more UTF-8 bytes (a Hangul syllable spelled as
        jamo, e.g. after NFKD accent stripping) character by character, so the
        jamo are never composed back; sentencepiece would compose them. Other
        clusters that long are in practice base letters with several combining
        marks; none of them tokenized differently in the parity checks (which
        included NFD-decomposed text in six languages).
        """
        if not _JAMO.search(text):
            return self._normalizer.normalize(text)
        return "".join(self._normalizer.normalize(part) for part in _JAMO.split(text) if part)

    def _encode_chunk(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self._model_normalize(self._normalize(text)).translate(_SPACES).split(" "):
            for piece in _metaspace_split(word) if word else ():
                ids.extend(self._word_cache.get_or_compute(piece, self._viterbi))
        return ids

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._pieces[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Pieces concatenated with '▁' read as a space; padding is dropped, other specials stay visible."""
        ids = list(ids)
        pieces = [p for i, p in zip(ids, self.convert_ids_to_tokens(ids), strict=True) if i != self.pad_id]
        return "".join(pieces).replace(SPIECE_WORD_BOUNDARY, " ").strip()

    def word_starts(self, ids: Iterable[int]) -> list[bool]:
        """A piece starts a word if it begins with '▁', is special/user-defined, or is all punctuation."""
        return [self._starts[i] for i in ids]


# ---------------------------------------------------------------------------------------------------------------
# Loading and training
# ---------------------------------------------------------------------------------------------------------------


def _byte_level_bpe() -> type[Tokenizer]:
    from bert_jax.data.bpe import ByteLevelBPETokenizer  # bpe.py builds on this module: imported on use

    return ByteLevelBPETokenizer


# The file that identifies each kind in a folder, and its class (a function, so bpe.py is imported only on use).
_DIRECTORY_FILES = (
    ("spiece.model", lambda: SentencePieceTokenizer),
    ("vocab.txt", lambda: WordPieceTokenizer),
    ("vocab.json", _byte_level_bpe),
)


def load_tokenizer(path: str, **options) -> Tokenizer:
    """The tokenizer at `path`: a sentencepiece `.model`, a WordPiece `vocab.txt`, a byte-level BPE `vocab.json`
    (merges.txt beside it), or a folder with one of them.

    `options` go to the tokenizer's constructor (e.g. `do_lower_case`). `path` may be on a bucket (gs://).
    """
    if fileio.isdir(path):
        for name, tokenizer_class in _DIRECTORY_FILES:
            if fileio.isfile(os.path.join(path, name)):
                return _construct(tokenizer_class(), os.path.join(path, name), options)
        names = [name for name, _ in _DIRECTORY_FILES]
        raise ConfigError(f"tokenizer folder {path!r} holds none of {names}; point at the model's tokenizer file")
    if not fileio.isfile(path):
        raise ConfigError(
            f"tokenizer file {path!r} does not exist; pass a .model, a vocab.txt, a vocab.json or a folder with one"
        )
    if path.endswith(".json"):
        return _construct(_byte_level_bpe(), path, options)
    cls = SentencePieceTokenizer if path.endswith(".model") else WordPieceTokenizer
    return _construct(cls, path, options)


def _construct(cls: type[Tokenizer], path: str, options: dict) -> Tokenizer:
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name not in ("self",)][1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"{cls.__name__} ({path!r}) takes no option {unknown}; it accepts {accepted}")
    if fileio.is_remote(path):  # sentencepiece and tokenizers read local files: a copy (a vocab.json's merges.txt too)
        merges = os.path.join(os.path.dirname(path), "merges.txt")
        path = fileio.local_copy([path, *([merges] if path.endswith(".json") and fileio.isfile(merges) else [])])[0]
    return cls(path, **options)


def iter_text_lines(paths: Sequence[str], stats: dict[str, int] | None = None) -> Iterator[str]:
    """Non-empty, stripped lines of text files; lines that are not valid UTF-8 are skipped and counted.

    Scraped corpora carry stray bytes; one bad line should cost that line,
    not the run. `stats["undecodable"]` (when given) counts skipped lines.
    """
    for path in paths:
        for raw in fileio.iter_byte_lines(path):  # local or on a bucket
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                if stats is not None:
                    stats["undecodable"] = stats.get("undecodable", 0) + 1
                continue
            if line:
                yield line


def _sample_lines(paths: Sequence[str], size: int, seed: int) -> tuple[list[str], int]:
    """A seeded uniform sample (reservoir) of at most `size` lines, and how many lines were undecodable.

    Sampling here rather than inside sentencepiece keeps training
    deterministic and memory bounded however large the corpus is.
    """
    rng, sample, stats = random.Random(seed), [], {"undecodable": 0}
    for n, line in enumerate(iter_text_lines(paths, stats)):
        if n < size:
            sample.append(line)
        else:
            j = rng.randrange(n + 1)
            if j < size:
                sample[j] = line
    return sample, stats["undecodable"]


def train_sentencepiece(
    input_files: list[str],
    vocab_size: int,
    model_prefix: str,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    input_sentence_size: int = 1_000_000,
    seed: int = 0,
) -> str:
    """Trains an ALBERT-layout SentencePiece model and returns the path of the `.model` file.

    Layout: '<pad>'=0, '<unk>'=1, '[CLS]'=2, '[SEP]'=3, '[MASK]'=4 (control
    symbols, so text can only produce them literally), no BOS/EOS, which is
    what `AlbertTokenizer` assumes. Same files and seed give the same model.
    """
    import sentencepiece as spm

    if not input_files:
        raise ConfigError("train_sentencepiece got no input files; pass at least one text file")
    for path in input_files:
        _require_file(path, "training text", "pass existing text files (one sentence or paragraph per line)")
    if vocab_size <= len(SPIECE_SPECIALS) + 2:
        raise ConfigError(f"vocab_size={vocab_size} leaves no room for pieces; use a few hundred or more")
    sentences, undecodable = _sample_lines(input_files, input_sentence_size, seed)
    if undecodable:
        log.warning("skipped %d lines that are not valid UTF-8 in %s", undecodable, input_files)
    if not sentences:
        raise ConfigError(f"no non-empty UTF-8 lines in {input_files}; pass text files to train on")
    log.info("training a %d-piece %s model on %d lines", vocab_size, model_type, len(sentences))
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=model_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0,
            pad_piece="<pad>",
            unk_id=1,
            unk_piece="<unk>",
            bos_id=-1,
            eos_id=-1,
            control_symbols=list(SPIECE_SPECIALS),
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ConfigError(
            f"sentencepiece training on {input_files} failed ({e}); change vocab_size (or character_coverage) "
            "within the bounds sentencepiece names, or add text"
        ) from e
    return model_prefix + ".model"


def unknown_rate(tokenizer: Tokenizer, lines: Iterable[str]) -> float:
    """The share of tokens that are unknown: how much text the vocabulary cannot represent."""
    total = unknown = 0
    for line in lines:
        ids = tokenizer.encode(line)
        total += len(ids)
        unknown += sum(i == tokenizer.unk_id for i in ids)
    return unknown / total if total else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def expand_glob(pattern: str) -> list[str]:
    """Files matching `pattern` (`**` recurses), sorted so training order does not depend on the file system."""
    if fileio.is_remote(pattern):  # gs://...: `*` within one folder level
        paths = [p for p in fileio.glob(pattern) if fileio.isfile(p)]
    else:
        paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not paths:
        raise ConfigError(f"--input={pattern!r} matches no file; check the path and quote the glob")
    return paths


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bert_jax.data.tokenizers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SentencePiece model on text files")
    train.add_argument("--input", required=True, help="glob of text files, one sentence or paragraph per line")
    train.add_argument("--vocab_size", type=int, required=True)
    train.add_argument("--model_prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    train.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    train.add_argument("--character_coverage", type=float, default=0.9995)
    train.add_argument("--input_sentence_size", type=int, default=1_000_000, help="lines sampled for training")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--sample_lines", type=int, default=2000, help="lines used to report the unknown rate")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`train`: trains a model, then prints its path, vocab size and unknown-token rate on a sample of the input."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = expand_glob(args.input)
        with fileio.staged_output(args.model_prefix) as prefix:  # a gs:// prefix: trained locally, then uploaded
            model = train_sentencepiece(
                paths,
                args.vocab_size,
                prefix,
                model_type=args.model_type,
                character_coverage=args.character_coverage,
                input_sentence_size=args.input_sentence_size,
                seed=args.seed,
            )
            tokenizer = SentencePieceTokenizer(model)
        model = args.model_prefix + ".model"
        sample = [line for _, line in zip(range(args.sample_lines), iter_text_lines(paths), strict=False)]
        rate = unknown_rate(tokenizer, sample)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {model}")
    print(f"vocab_size: {tokenizer.vocab_size}")
    print(f"unknown_rate: {rate:.6f} ({len(sample)} sample lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
