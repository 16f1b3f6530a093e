"""Multilingual corpora sampled with exponentially smoothed language probabilities (XLM, multilingual BERT).

Language i, with share p_i of the data, is drawn with probability
q_i = p_i^S / sum_j p_j^S: S=1 keeps the data's own mix, S=0 makes every
language equally likely, S=0.7 (the default, as in XLM's tokenizer sampling,
Conneau & Lample 2019) lifts small languages without drowning large ones.

The share p_i is counted in the unit being drawn, so that S=1 reproduces the
data exactly:
- the tokenizer's training text draws lines (sentences, XLM's unit): p_i is
  the share of lines. Lines rather than characters because a character is
  not the same amount of text in every script (a Chinese character carries
  about what a short Latin word does), while a sentence is close to it;
- pretraining draws rows (instances: each a sequence of up to
  `max_seq_length` tokens cut from one language's documents): p_i is the
  share of rows, i.e. roughly of tokens, what the model actually reads.

Both draws are with replacement and seeded, so a small language is repeated
rather than starved, and the rows a step sees still depend only on
(seed, step).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from bert_jax import fileio
from bert_jax.data import sources
from bert_jax.data.pretraining import Instances
from bert_jax.errors import ConfigError


def parse_languages(spec: str) -> dict[str, list[str]]:
    """The files of each language: 'en=path,zh=path' (file, folder or glob each) or a glob of language folders.

    An entry without '=' is a glob: of folders, each a language named after
    it ('corpus/*': corpus/en, corpus/zh, ...; files it also matches are
    ignored), or of files, grouped by their folder's name ('corpus/*/*.txt').
    """
    languages: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        if "=" in entry:
            lang, _, path = entry.partition("=")
            languages.setdefault(lang.strip(), []).extend(sources.expand_paths(path.strip()))
            continue
        matches = fileio.glob(entry)  # local or on a bucket (gs://)
        folders = [m for m in matches if fileio.isdir(m)]
        for folder in folders:  # a glob of folders: files beside them (a README) are not a language
            files = fileio.files_in(folder)
            languages.setdefault(os.path.basename(os.path.normpath(folder)), []).extend(files)
        for path in [] if folders else [m for m in matches if fileio.isfile(m)]:
            languages.setdefault(os.path.basename(os.path.dirname(fileio.absolute(path))), []).append(path)
        if not matches:
            raise ConfigError(f"data.languages entry {entry!r} matches nothing; give lang=path entries or a glob")
    languages = {lang: files for lang, files in languages.items() if files}
    if not languages:
        raise ConfigError(f"data.languages={spec!r} names no files; e.g. 'en=corpus/en,zh=corpus/zh' or 'corpus/*'")
    return dict(sorted(languages.items()))


def smoothed_probs(counts: Mapping[str, float], smoothing: float) -> dict[str, float]:
    """q_i = p_i^S / sum_j p_j^S with p_i = counts_i / sum(counts) (S=0: uniform over the languages)."""
    if smoothing < 0:
        raise ConfigError(f"data.language_smoothing must be >= 0, got {smoothing}")
    empty = [lang for lang, n in counts.items() if n <= 0]
    if empty or not counts:
        raise ConfigError(f"languages {empty or 'none'} have no text; drop them from data.languages")
    total = float(sum(counts.values()))
    weights = {lang: (n / total) ** smoothing for lang, n in counts.items()}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}


def draw(counts: Sequence[int], probs: Sequence[float], size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` indices into the concatenation of groups of `counts` items: group by `probs`, item uniform within it."""
    counts = np.asarray(counts, np.int64)
    group = rng.choice(len(counts), size=size, p=np.asarray(probs) / np.sum(probs))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return offsets[group] + (rng.random(size) * counts[group]).astype(np.int64)


def read_languages(config) -> dict[str, list[list[str]]]:
    """Each configured language's documents (config.data.languages, read with config.data.line_format)."""
    return {
        lang: sources.read_documents(files, config.data.line_format)[0]
        for lang, files in parse_languages(config.data.languages).items()
    }


def sample_sentences(
    documents: Mapping[str, list[list[str]]], smoothing: float, seed: int, size: int | None = None
) -> tuple[list[str], list[str]]:
    """Sentences drawn with smoothed language probabilities (by sentence counts) and the language of each.

    `size` defaults to the total number of sentences, so only the mix changes.
    """
    langs = list(documents)
    lines = [[s for doc in documents[lang] for s in doc] for lang in langs]
    counts = [len(x) for x in lines]
    q = smoothed_probs(dict(zip(langs, counts, strict=True)), smoothing)
    flat = [s for x in lines for s in x]
    index = draw(counts, [q[lang] for lang in langs], size or len(flat), np.random.default_rng([seed, 20]))
    owner = np.repeat(np.arange(len(langs)), counts)[index]
    return [flat[i] for i in index], [langs[i] for i in owner]


def write_tokenizer_corpus(config, workdir: str) -> str:
    """The tokenizer's training text: lines sampled by smoothed language probabilities, written to the workdir."""
    smoothing = config.data.language_smoothing
    path = os.path.join(workdir, f"multilingual_corpus-S{smoothing:g}.txt")
    if not fileio.isfile(path):
        lines, _ = sample_sentences(read_languages(config), smoothing, config.seed)
        if fileio.is_remote(path):  # a bucket object appears whole when written
            with fileio.open(path, "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
            return path
        os.makedirs(workdir, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(path + ".tmp", path)
    return path


def concat_instances(parts: Sequence[Instances]) -> Instances:
    return Instances(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Instances)))


def resample_rows(
    per_language: Mapping[str, Instances], smoothing: float, seed: int, size: int | None = None
) -> tuple[Instances, np.ndarray]:
    """Rows drawn with smoothed language probabilities (by row counts), and each row's language index.

    `size` defaults to the total row count (an epoch stays as long). The
    draw is seeded: the same (seed, data) give the same rows.
    """
    langs = list(per_language)
    counts = [len(per_language[lang]) for lang in langs]
    q = smoothed_probs(dict(zip(langs, counts, strict=True)), smoothing)
    index = draw(counts, [q[lang] for lang in langs], size or sum(counts), np.random.default_rng([seed, 21]))
    language = np.repeat(np.arange(len(langs)), counts)[index]
    return concat_instances([per_language[lang] for lang in langs]).select(index), language


def build_instances(config, make: Callable[[list[list[str]], int], Instances]) -> tuple[Instances, Instances]:
    """Training rows resampled by language and evaluation rows in the data's own mix.

    `make(documents, key)` cuts documents into instances (the pipeline's
    create_instances call). Each language is cut on its own, so NSP's random
    sentence B comes from the same language; each keeps its last
    `data.eval_fraction` of documents for evaluation.
    """
    train, evaluation = {}, []
    for i, (lang, docs) in enumerate(read_languages(config).items()):
        n_eval = max(1, int(len(docs) * config.data.eval_fraction)) if len(docs) > 1 else 0
        train[lang] = make(docs[: len(docs) - n_eval], 1000 + 2 * i)
        evaluation.append(make(docs[len(docs) - n_eval :] or docs, 1001 + 2 * i))
    rows, _ = resample_rows(train, config.data.language_smoothing, config.seed)
    return rows, concat_instances(evaluation)
