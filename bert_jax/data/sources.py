"""Where pretraining text comes from: text files, a tensorflow-datasets dataset, or the sample corpus.

Every source yields documents as lists of sentences (strings). Each host keeps
only its shard (documents `process_index::process_count`), so a pod never
tokenizes the whole corpus on every host. Undecodable lines are skipped and
counted, never fatal; an empty or missing corpus is an error that says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import ml_collections

from bert_jax import fileio
from bert_jax.data.sample_corpus import write_sample_corpus
from bert_jax.errors import ConfigError

log = logging.getLogger(__name__)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
HEADING = re.compile(r"^=( =)* .* =( =)*$")  # WikiText section headings: = Title =, = = Section = =, ...
TOP_HEADING = re.compile(r"^= [^=].* =$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes, as fortune files carry
LINE_FORMATS = ("sentences", "paragraphs", "fortunes")


@dataclasses.dataclass
class TextStats:
    """What reading a corpus skipped, for the log and for tests."""

    lines: int = 0
    undecodable_lines: int = 0


def expand_paths(pattern: str) -> list[str]:
    """A file, a folder (its files, sorted) or a glob, local or on a bucket (gs://); an error when nothing matches."""
    if fileio.isdir(pattern):
        paths = fileio.files_in(pattern)
    else:
        paths = fileio.glob(pattern)
    if not paths:
        raise ConfigError(
            f"corpus path {pattern!r} matches no file; set --config.data.path to a text file, folder or glob"
        )
    return paths


def _decoded_lines(path: str, stats: TextStats):
    for raw in fileio.iter_byte_lines(path):
        stats.lines += 1
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            stats.undecodable_lines += 1


def read_documents(paths: list[str], line_format: str = "sentences") -> tuple[list[list[str]], TextStats]:
    """Documents of sentences from text files.

    'sentences' is BERT's format: one sentence per line, a blank line between
    documents. 'paragraphs' (WikiText) has one paragraph per line, split into
    sentences at sentence-ending punctuation; a top-level heading (` = Title = `)
    starts a new document, so documents are articles and NSP/SOP pairs come
    from within an article. Files without headings make one document a file.
    'fortunes' (the `fortune` program's files) has documents separated by a
    line holding only '%', one sentence per non-empty line (a poem's verse, a
    wrapped line of prose), terminal colour codes removed.
    """
    if line_format not in LINE_FORMATS:
        raise ConfigError(f"unknown data.line_format {line_format!r}; use one of {LINE_FORMATS}")
    stats, documents = TextStats(), []
    for path in paths:
        current: list[str] = []
        for line in _decoded_lines(path, stats):
            text = line.strip()
            if line_format == "fortunes":
                if text == "%":
                    if current:
                        documents.append(current)
                    current = []
                elif text := ANSI_ESCAPE.sub("", text).strip():
                    current.append(text)
            elif line_format == "paragraphs":
                if TOP_HEADING.match(text):
                    if current:
                        documents.append(current)
                    current = []
                elif text and not HEADING.match(text):
                    current.extend(SENTENCE_END.split(text))
            elif text:
                current.append(text)
            elif current:
                documents.append(current)
                current = []
        if current:
            documents.append(current)
    if stats.undecodable_lines:
        log.warning("skipped %d line(s) that are not UTF-8 in %s", stats.undecodable_lines, ", ".join(paths))
    if not documents:
        raise ConfigError(f"corpus {', '.join(paths)} has no non-empty lines; point data.path at real text")
    return documents, stats


def read_tfds_documents(config: ml_collections.ConfigDict) -> list[list[str]]:
    """Documents from a tensorflow-datasets dataset (one example = one document)."""
    import tensorflow_datasets as tfds

    data = config.data
    if not data.tfds_name:
        raise ConfigError("data.source='tfds' needs --config.data.tfds_name=NAME (e.g. wikipedia/20230601.en)")
    try:
        source = tfds.data_source(data.tfds_name, split=data.tfds_split, data_dir=data.tfds_data_dir or None)
    except Exception as e:  # noqa: BLE001 - tfds raises many types for a missing dataset
        raise ConfigError(
            f"tensorflow-datasets dataset {data.tfds_name!r} split {data.tfds_split!r} cannot be opened ({e}); "
            "prepare it with `tfds build` and set data.tfds_data_dir"
        ) from e
    documents = []
    for index in range(len(source)):
        text = source[index][data.tfds_text_key]
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
        paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
        sentences = [s for p in paragraphs for s in SENTENCE_END.split(p)]
        if sentences:
            documents.append(sentences)
    if not documents:
        raise ConfigError(f"tensorflow-datasets dataset {data.tfds_name!r} has no text under {data.tfds_text_key!r}")
    return documents


def load_documents(config: ml_collections.ConfigDict, workdir: str) -> list[list[str]]:
    """All documents of the configured source (before host sharding)."""
    source = config.data.source
    if source == "sample":
        path = write_sample_corpus(os.path.join(workdir, "sample_corpus.txt"))
        return read_documents([path])[0]
    if source == "text":
        if not config.data.path:
            raise ConfigError("data.source='text' needs --config.data.path=FILE_OR_GLOB")
        return read_documents(expand_paths(config.data.path), config.data.line_format)[0]
    if source == "tfds":
        return read_tfds_documents(config)
    raise ConfigError(f"unknown data.source {source!r}; use 'sample', 'text' or 'tfds'")


def host_shard(items: list, process_index: int, process_count: int) -> list:
    """This host's share of the documents: every `process_count`-th, starting at its index."""
    return items[process_index::process_count]
