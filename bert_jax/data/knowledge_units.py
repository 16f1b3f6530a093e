"""ERNIE's knowledge units: which tokens form one basic word, phrase or entity, computed on the host per sentence.

ERNIE 1.0 (Sun et al. 2019) masks whole units at three levels: basic
(a word of a space-delimited language, a character of Chinese), phrase (a
chunk, or a segmenter's word in Chinese) and entity (a named entity). Here:

- basic: the tokenizer's own words (`Tokenizer.word_starts`). WordPiece
  makes each CJK character a word, as ERNIE and Chinese-BERT-wwm want. A
  SentencePiece model puts '▁' only at spaces and may hold multi-character
  Chinese pieces, so its "word" would be a whole clause: there every piece
  that touches a CJK character starts a basic unit (a piece is the finest
  unit a model without character tokens has).
- phrase: the words of a segmenter (`segmenter='jieba'` for Chinese; jieba
  keeps runs of Latin letters whole, so mixed text works) and the lexicon's
  untyped or 'phrase' entries.
- entity: the lexicon's entries with any other type (PER, LOC, ORG, ...).

Segmenter and lexicon work on the text the tokens spell (lower-cased when the
tokenizer lower-cases), so lexicon entries are normalised exactly as the
corpus is. Levels nest: a unit of one level is a union of units of the level
below (a segmenter word or lexicon entry that starts or ends inside a token
takes the whole token, so units are always whole tokens).

The result is one int8 per token, `unit_start`: the coarsest level at which
the token begins a unit (0 basic, 1 phrase, 2 entity), -1 where it begins
none. Units of level k begin exactly at the tokens with `unit_start >= k`.
"""

from __future__ import annotations

import bisect
import logging
import unicodedata
from collections.abc import Sequence

import numpy as np

from bert_jax.data.tokenizers import (
    SPIECE_WORD_BOUNDARY,
    SentencePieceTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    _is_punctuation,
)
from bert_jax.errors import ConfigError

LEVELS = ("basic", "phrase", "entity")
SEGMENTERS = ("", "jieba")
PHRASE_TYPES = ("", "phrase")  # lexicon types of phrase-level entries; any other type is an entity
_PLACEHOLDER = "\u25a1"  # what an unknown or special token spells: one character no lexicon entry holds


def _is_cjk_char(char: str) -> bool:
    """CJK ideographs and the kana/hangul scripts written without spaces between words."""
    return unicodedata.name(char, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def load_lexicon(path: str) -> dict[str, int]:
    """Entries of a lexicon file (one a line, optional tab and type) mapped to their level (1 phrase, 2 entity).

    Blank lines and lines starting with '#' are skipped; an entry listed twice
    keeps the higher level.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(f"lexicon {path!r} cannot be read ({e}); set masking.lexicon to a UTF-8 text file") from e
    entries: dict[str, int] = {}
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        text, _, kind = line.partition("\t")
        level = 1 if kind.strip().lower() in PHRASE_TYPES else 2
        text = text.strip()
        entries[text] = max(level, entries.get(text, 0))
    if not entries:
        raise ConfigError(f"lexicon {path!r} has no entries; write one phrase or entity a line (tab, type optional)")
    return entries


def _jieba():
    try:
        import jieba
    except ImportError as e:
        raise ConfigError('masking.segmenter="jieba" needs the jieba package: pip install "bert_jax[chinese]"') from e
    logging.getLogger("jieba").setLevel(logging.WARNING)  # its dictionary-loading chatter is DEBUG on stderr
    return jieba


class KnowledgeUnits:
    """`unit_starts(ids)` for the sentences of a corpus: call it as `create_instances(unit_start_fn=...)`."""

    def __init__(self, tokenizer: Tokenizer, segmenter: str = "", lexicon: str | dict[str, int] = ""):
        if segmenter not in SEGMENTERS:
            raise ConfigError(f"masking.segmenter must be one of {SEGMENTERS}, got {segmenter!r}")
        if not isinstance(tokenizer, WordPieceTokenizer | SentencePieceTokenizer):
            raise ConfigError(
                f"knowledge units need a WordPiece or SentencePiece tokenizer, not {type(tokenizer).__name__}; "
                "set tokenizer.path to a vocab.txt or .model"
            )
        self.tokenizer = tokenizer
        self._specials = tokenizer.special_ids
        entries = load_lexicon(lexicon) if isinstance(lexicon, str) and lexicon else dict(lexicon or {})
        # Entries normalised as the corpus is: the text their own tokens spell.
        self.lexicon: dict[str, int] = {}
        for text, level in entries.items():
            spelled = self._spell(tokenizer.encode(text))[0].strip()
            if spelled:
                self.lexicon[spelled] = max(level, self.lexicon.get(spelled, 0))
        self._max_entry = max((len(e) for e in self.lexicon), default=0)
        self._segment = None
        if segmenter == "jieba":
            jieba = _jieba()
            words = jieba.Tokenizer()  # a private dictionary: the lexicon is added to it, not to jieba's global one
            for entry in self.lexicon:
                if " " not in entry:
                    words.add_word(entry)
            self._segment = words.tokenize

    def _surface(self, token: str, token_id: int) -> str:
        if token_id in self._specials:
            return _PLACEHOLDER
        if isinstance(self.tokenizer, WordPieceTokenizer):
            return token[2:] if token.startswith("##") else token
        return token.replace(SPIECE_WORD_BOUNDARY, " ")

    def _spell(self, ids: Sequence[int]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """The text the tokens spell, each token's [start, end) there (leading space excluded), basic starts.

        WordPiece drops spaces: one goes between words unless a CJK character
        or punctuation is on either side (Chinese is written without spaces,
        and '2.73' or '--' should reach the segmenter as written, not '2 . 73').
        """
        ids = list(ids)
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        basic = np.array(self.tokenizer.word_starts(ids), bool)
        wordpiece = isinstance(self.tokenizer, WordPieceTokenizer)
        parts: list[str] = []
        starts = np.zeros(len(ids), np.int64)
        ends = np.zeros(len(ids), np.int64)
        pos, previous = 0, ""
        for t, (token, token_id) in enumerate(zip(tokens, ids, strict=True)):
            surface = self._surface(token, token_id)
            cjk_edge = bool(previous) and bool(surface) and (_is_cjk_char(previous[-1]) or _is_cjk_char(surface[0]))
            glued = cjk_edge or (bool(previous) and bool(surface) and _is_punctuation(previous[-1]))
            if wordpiece and t > 0 and basic[t] and not (glued or (surface and _is_punctuation(surface[0]))):
                surface = " " + surface
            elif not wordpiece and cjk_edge:
                basic[t] = True  # SentencePiece in CJK text: every piece a basic unit
            content = surface.lstrip(" ")
            starts[t] = pos + len(surface) - len(content)
            pos += len(surface)
            ends[t] = pos
            parts.append(surface)
            previous = content or previous
        return "".join(parts), starts, ends, basic

    def __call__(self, ids: Sequence[int]) -> np.ndarray:
        """int8 per token: the coarsest level at which it begins a unit, -1 where it begins none."""
        text, starts, ends, basic = self._spell(ids)
        levels = np.where(basic, len(LEVELS) - 1, -1).astype(np.int8)
        if not len(levels):
            return levels
        spans: list[tuple[int, int, int]] = []  # (start, end, level) in characters
        if self._segment is not None:
            spans.extend((a, b, 1) for _, a, b in self._segment(text) if text[a:b].strip())
        if self.lexicon:
            spans.extend(self._lexicon_matches(text, starts[basic], ends, basic))
        for a, b, level in spans:
            # Tokens beginning strictly inside a span continue the unit of the token the span begins in.
            inside = (starts > a) & (starts < b)
            np.minimum(levels, np.where(inside, level - 1, len(LEVELS) - 1), out=levels)
        return levels

    def _lexicon_matches(self, text: str, unit_starts: np.ndarray, ends: np.ndarray, basic: np.ndarray):
        """Leftmost-longest lexicon entries over the sequence of basic units, never overlapping."""
        unit_ends = sorted(set(ends[np.append(basic[1:], True)].tolist()))  # where a basic unit ends
        matches, covered = [], -1
        for a in unit_starts.tolist():
            if a < covered:
                continue
            lo = bisect.bisect_right(unit_ends, a)
            hi = bisect.bisect_right(unit_ends, a + self._max_entry)
            for b in reversed(unit_ends[lo:hi]):  # longest first
                level = self.lexicon.get(text[a:b])
                if level is not None:
                    matches.append((a, b, level))
                    covered = b
                    break
        return matches


def unit_start_fn(tokenizer: Tokenizer, masking) -> KnowledgeUnits | None:
    """The configured `KnowledgeUnits` (config.masking), or None when masking needs only the tokenizer's words."""
    if masking.scheme != "knowledge" and not masking.segmenter and not masking.lexicon:
        return None
    return KnowledgeUnits(tokenizer, masking.segmenter, masking.lexicon)


def parse_level_probs(spec: str) -> tuple[float, float, float]:
    """'basic=0.5,phrase=0.25,entity=0.25' -> (0.5, 0.25, 0.25); levels left out get 0; must sum to 1."""
    probs = dict.fromkeys(LEVELS, 0.0)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in probs:
            raise ConfigError(f"masking.unit_level_probs: unknown level {name.strip()!r}; use {LEVELS}")
        try:
            probs[name.strip()] = float(value)
        except ValueError as e:
            raise ConfigError(f"masking.unit_level_probs: {item!r} is not level=probability") from e
    values = tuple(probs[name] for name in LEVELS)
    if min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(
            f"masking.unit_level_probs={spec!r} must give probabilities summing to 1, "
            "e.g. 'basic=0.5,phrase=0.25,entity=0.25'"
        )
    return values
