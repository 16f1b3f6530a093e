"""RoBERTa's byte-level BPE (GPT-2's), read from `vocab.json` + `merges.txt` and run by `tokenizers`.

Byte-level BPE maps every UTF-8 byte to a printable character before
merging, so any text encodes without '<unk>' and decodes back exactly. The
Rust `tokenizers` library does the work, set up as transformers 5's
`RobertaTokenizer` sets it up from the same two files, so ids equal
`transformers.RobertaTokenizerFast(vocab_file, merges_file)`'s
(`tests/test_roberta.py` checks that on WikiText).

`train_byte_level_bpe` makes such files from a corpus, with RoBERTa's
special-token layout: '<s>'=0, '<pad>'=1, '</s>'=2, '<unk>'=3, and '<mask>'
as the last id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable

from bert_jax.data.tokenizers import Tokenizer, _AddedTokenSplitter, _is_punctuation_piece, _require_file, _sample_lines
from bert_jax.errors import ConfigError

log = logging.getLogger(__name__)

VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
BPE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in RoBERTa's vocabulary
MASK = "<mask>"  # RoBERTa's last id (50264 in roberta-base)
WORD_BOUNDARY = "\u0120"  # 'Ġ': the byte-level stand-in for the space that precedes a word


class ByteLevelBPETokenizer(Tokenizer):
    """RoBERTa's tokenizer: `<s>`/`</s>`/`<pad>`/`<mask>` serve as [CLS]/[SEP]/[PAD]/[MASK].

    `vocab_path` is a vocab.json (merges.txt beside it unless `merges_path` is
    given). No prefix space is added, as in RoBERTa, so a text's first word
    tokenizes without 'Ġ'. `do_lower_case` (off for RoBERTa) lower-cases
    before encoding, for corpora whose vocabulary was trained lower-cased.
    """

    # RoBERTa's pairs: `<s> A </s></s> B </s>`, one token type (type_vocab_size 1), as `transformers.RobertaTokenizer`
    pair_separators, second_token_type = 2, 0

    def __init__(self, vocab_path: str, merges_path: str | None = None, do_lower_case: bool = False):
        from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as RustTokenizer

        merges_path = merges_path or os.path.join(os.path.dirname(vocab_path), MERGES_FILE)
        fix = "pass the vocab.json of a byte-level BPE model with its merges.txt beside it"
        _require_file(vocab_path, "BPE vocab", fix)
        _require_file(merges_path, "BPE merges", fix)
        self.vocab_path, self.merges_path, self.do_lower_case = vocab_path, merges_path, do_lower_case
        try:
            vocab, merges = models.BPE.read_file(vocab_path, merges_path)
        except Exception as e:  # noqa: BLE001 - the Rust reader raises a plain Exception
            raise ConfigError(f"{vocab_path!r} / {merges_path!r} cannot be read as BPE files ({e}); {fix}") from e
        missing = [t for t in (*BPE_SPECIALS, MASK) if t not in vocab]
        if missing:
            raise ConfigError(
                f"BPE vocab {vocab_path!r} lacks the special tokens {missing}; RoBERTa vocabularies have "
                f"{[*BPE_SPECIALS, MASK]} (train one with bert_jax.data.bpe.train_byte_level_bpe)"
            )
        self.vocab_size = max(vocab.values()) + 1
        self._tokens = [""] * self.vocab_size
        for token, i in vocab.items():
            self._tokens[i] = token
        self._rust = RustTokenizer(
            models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
        )
        if do_lower_case:
            self._rust.normalizer = normalizers.Lowercase()
        self._rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._rust.decoder = decoders.ByteLevel()
        self._rust.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (*BPE_SPECIALS, MASK)])
        self.cls_id, self.pad_id, self.sep_id, self.unk_id = (vocab[t] for t in BPE_SPECIALS)
        self.mask_id = vocab[MASK]
        # The Rust tokenizer matches literal special tokens itself, so the shared splitter passes text through whole.
        self._splitter = _AddedTokenSplitter({})
        # Punctuation is judged on a token's text, not its byte symbols: continuation bytes of other scripts'
        # characters show as symbols such as '¡' or '§', which are no word of their own.
        specials = self.special_ids
        self._starts = [
            i in specials or token.startswith(WORD_BOUNDARY) or _is_punctuation_piece(self._rust.decode([i]))
            for i, token in enumerate(self._tokens)
        ]

    def _encode_chunk(self, text: str) -> list[int]:
        return self._rust.encode(text, add_special_tokens=False).ids

    def _encode_chunk_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The Rust tokenizer's own character spans (a 'Ġ' token's span includes the space before it)."""
        encoding = self._rust.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """The text back, byte for byte (padding dropped, other special tokens written out)."""
        return self._rust.decode([i for i in ids if i != self.pad_id], skip_special_tokens=False)

    def word_starts(self, ids: Iterable[int]) -> list[bool]:
        """'Ġ'-prefixed tokens, special tokens and punctuation start words, and so does a text's first token."""
        flags = [self._starts[i] for i in ids]
        if flags:
            flags[0] = True  # no prefix space: the first word of a text has no 'Ġ'
        return flags


def train_byte_level_bpe(
    input_files: list[str], vocab_size: int, output_dir: str, input_sentence_size: int = 1_000_000, seed: int = 0
) -> str:
    """Trains RoBERTa-layout BPE files in `output_dir` and returns the path of its vocab.json.

    The 256 byte symbols are always in the vocabulary (nothing is ever
    unknown); merges fill it up to `vocab_size` with '<mask>' taking the last
    id. A corpus too small for that many merges gives a smaller vocabulary.
    Lines are a seeded sample, as for sentencepiece, so same files and seed
    give the same files.
    """
    from tokenizers import ByteLevelBPETokenizer as RustByteLevelBPE

    if not input_files:
        raise ConfigError("train_byte_level_bpe got no input files; pass at least one text file")
    for path in input_files:
        _require_file(path, "training text", "pass existing text files (one sentence or paragraph per line)")
    minimum = len(BPE_SPECIALS) + 256 + 1
    if vocab_size < minimum:
        raise ConfigError(f"vocab_size={vocab_size} is too small for byte-level BPE; use at least {minimum}")
    lines, undecodable = _sample_lines(input_files, input_sentence_size, seed)
    if undecodable:
        log.warning("skipped %d lines that are not valid UTF-8 in %s", undecodable, input_files)
    if not lines:
        raise ConfigError(f"no non-empty UTF-8 lines in {input_files}; pass text files to train on")
    log.info("training a %d-token byte-level BPE on %d lines", vocab_size, len(lines))
    trainer = RustByteLevelBPE(add_prefix_space=False)
    trainer.train_from_iterator(
        lines, vocab_size=vocab_size - 1, special_tokens=list(BPE_SPECIALS), show_progress=False
    )
    # Written to a temporary folder renamed into place: a cached vocab.json is always a complete one.
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".bpe-tmp-")
    try:
        trainer.save_model(tmp)
        with open(os.path.join(tmp, VOCAB_FILE), encoding="utf-8") as f:
            vocab = json.load(f)
        vocab[MASK] = len(vocab)
        with open(os.path.join(tmp, VOCAB_FILE), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(output_dir, VOCAB_FILE)
