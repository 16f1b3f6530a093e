"""Entity-level precision, recall and F1 exactly as `seqeval` computes them in its default mode.

Papers report CoNLL-2003 F1 from conlleval.pl, or from `seqeval` (what the
Hugging Face examples use), whose default (non-strict) mode reproduces
conlleval's chunking: an entity starts at a B- tag, at an I- tag after O
or after a tag of another type (so IOB1, where I- opens an entity, and
IOB2 read the same), and at E-/S- where IOBES/IOE tags are used; it ends
before O, B-, S-, a type change, or after E-/S-. Sentences are joined with
an 'O' between them, so no entity crosses a sentence boundary. Scores are
micro-averaged over all types, and 0 when undefined (seqeval's default
`zero_division`). This module follows seqeval 1.2.2's `get_entities`
rule for rule so that no dependency is needed at training time;
`tests/test_conll.py` compares it with `seqeval` itself when installed.
"""

from __future__ import annotations

from collections.abc import Sequence


def _split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type) as seqeval splits a tag: 'B-PER' -> ('B', 'PER'), 'O' -> ('O', '_'), 'B' -> ('B', '_')."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """True when an entity ended on the previous token (seqeval's `end_of_chunk`)."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """True when an entity starts on this token (seqeval's `start_of_chunk`)."""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(sentences: Sequence[Sequence[str]]) -> list[tuple[str, int, int]]:
    """(type, first token, last token) of every entity, token positions counted over the joined sentences.

    Sentences are joined with one 'O' after each, as seqeval does for nested
    lists, so positions match seqeval's and entities never cross sentences.
    """
    tags = [tag for sentence in sentences for tag in (*sentence, "O")]
    entities = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, tag_string in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(tag_string)
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            entities.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return entities


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro F1, precision, recall (fractions in [0, 1]) and token accuracy of `predicted` against `gold`.

    Both are lists of sentences of tags; each predicted sentence must have
    its gold sentence's length (one tag per word).
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
    gold_entities = set(get_entities(gold))
    predicted_entities = set(get_entities(predicted))
    correct = len(gold_entities & predicted_entities)
    precision = _ratio(correct, len(predicted_entities))
    recall = _ratio(correct, len(gold_entities))
    f1 = _ratio(2 * precision * recall, precision + recall)
    tokens = sum(len(g) for g in gold)
    hits = sum(a == b for g, p in zip(gold, predicted, strict=True) for a, b in zip(g, p, strict=True))
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": _ratio(hits, tokens)}
