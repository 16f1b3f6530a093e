"""From configured text to batches: documents -> tokenizer -> instances -> masked batches.

Instances are built once per run, deterministically from the seed; masking
happens on the host for every batch from `rng([seed, step])` (dynamic
masking) or once per copy (static, `dupe_factor` copies), so the data a step
sees depends only on (seed, step) and resuming at a step is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os

import jax
import ml_collections
import numpy as np

from bert_jax import fileio
from bert_jax.data import multilingual, sources
from bert_jax.data.bpe import VOCAB_FILE, train_byte_level_bpe
from bert_jax.data.knowledge_units import parse_level_probs, unit_start_fn
from bert_jax.data.pretraining import BatchIterator, Instances, create_instances
from bert_jax.data.tokenizers import Tokenizer, load_tokenizer, train_sentencepiece
from bert_jax.errors import ConfigError
from bert_jax.objectives.masking import mask_batch

log = logging.getLogger(__name__)


def corpus_files(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """The text files a tokenizer is trained on when none is given."""
    if config.data.languages:  # lines sampled by smoothed language probabilities
        return [multilingual.write_tokenizer_corpus(config, workdir)]
    if config.data.source == "sample":
        return [sources.write_sample_corpus(os.path.join(workdir, "sample_corpus.txt"))]
    if config.data.source == "text":
        return sources.expand_paths(config.data.path)
    path = os.path.join(workdir, "tfds_corpus.txt")
    if not fileio.isfile(path):  # a bucket workdir: written to a local file, then uploaded
        with fileio.staged_output(path) as local, open(local, "w", encoding="utf-8") as f:
            for document in sources.read_tfds_documents(config):
                f.write("\n".join(document) + "\n\n")
    return [path]


# The bundled sample corpus supports about 5,800 sentencepiece pieces; size configs ask for 30k.
SAMPLE_VOCAB_LIMIT = 4096
# tokenizer.kind -> (cache name in the workdir, the file that loads it, trainer(files, size, cache path))
TRAINED_TOKENIZERS = {
    "sentencepiece": ("tokenizer", lambda prefix: prefix + ".model", train_sentencepiece),
    "bpe": ("bpe", lambda folder: os.path.join(folder, VOCAB_FILE), train_byte_level_bpe),  # + merges.txt
}


def get_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> Tokenizer:
    """The configured tokenizer, or one trained on the corpus and cached in the workdir.

    A given tokenizer must have exactly the model's vocabulary size. One
    trained here may be smaller (the sample corpus cannot support 30k pieces):
    the model's extra embedding rows are then padding no token id reaches.
    """
    options = {"do_lower_case": config.tokenizer.do_lower_case}
    if config.tokenizer.path:
        tokenizer = load_tokenizer(config.tokenizer.path, **options)
    else:
        size = config.tokenizer.vocab_size
        if config.data.source == "sample" and size > SAMPLE_VOCAB_LIMIT:
            log.info("the sample corpus supports %d pieces, not %d; the model pads the rest", SAMPLE_VOCAB_LIMIT, size)
            size = SAMPLE_VOCAB_LIMIT
        kind = config.tokenizer.kind
        if kind not in TRAINED_TOKENIZERS:
            raise ConfigError(f"unknown tokenizer.kind {kind!r}; use one of {sorted(TRAINED_TOKENIZERS)}")
        name, cached_file, train = TRAINED_TOKENIZERS[kind]
        prefix = os.path.join(workdir, f"{name}-{size}")
        if not fileio.isfile(cached_file(prefix)) and jax.process_index() == 0:
            log.info("training a %d-token %s tokenizer on the corpus", size, kind)
            coverage = {"character_coverage": config.tokenizer.character_coverage} if kind == "sentencepiece" else {}
            with fileio.staged_output(prefix) as output:  # a bucket workdir: trained locally, then uploaded
                train(corpus_files(config, workdir), size, output, **coverage)
        if jax.process_count() > 1:  # the other hosts wait for process 0's tokenizer (shared workdir)
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("bert_jax tokenizer trained")
        tokenizer = load_tokenizer(cached_file(prefix), **options)
    n, v = tokenizer.vocab_size, config.model.vocab_size
    if n > v or (n != v and config.tokenizer.path):
        raise ConfigError(
            f"the tokenizer has {n} tokens but model.vocab_size is {v}; "
            f"pass --config.model.vocab_size={n} or a tokenizer of the model's vocabulary"
        )
    if config.model.position_ids_from_padding and tokenizer.pad_id != config.model.pad_token_id:
        raise ConfigError(  # positions count from the padding id: a wrong one shifts every position
            f"the tokenizer pads with id {tokenizer.pad_id} but model.pad_token_id is {config.model.pad_token_id}; "
            f"pass --config.model.pad_token_id={tokenizer.pad_id}"
        )
    return tokenizer


def tokenize_documents(documents: list[list[str]], tokenizer: Tokenizer) -> list[list[list[int]]]:
    out = []
    for document in documents:
        sentences = [ids for ids in (tokenizer.encode(s) for s in document) if ids]
        if sentences:
            out.append(sentences)
    return out


@dataclasses.dataclass
class PretrainingData:
    """This host's training and evaluation instances and how to mask them."""

    train: Instances
    eval: Instances
    tokenizer: Tokenizer
    config: ml_collections.ConfigDict

    def masked(self, instances: Instances, index: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One batch of rows `index`, masked with `rng`."""
        m = self.config.masking
        masked = mask_batch(
            instances.input_ids[index],
            rng=rng,
            vocab_size=self.tokenizer.vocab_size,
            mask_id=self.tokenizer.mask_id,
            special_ids=self.tokenizer.special_ids,
            mask_rate=m.rate,
            max_predictions=m.max_predictions,
            scheme=m.scheme,
            # with a segmenter, 'whole_word' and 'ngram' group tokens into its words (Chinese-BERT-wwm)
            word_starts=instances.unit_starts[index] >= 1 if m.segmenter else instances.word_starts[index],
            unit_starts=instances.unit_starts[index],
            unit_level_probs=parse_level_probs(m.unit_level_probs),
            max_ngram=m.max_ngram,
            replace_probs=tuple(m.replace_probs),
            max_span_length=m.max_span_length,
            span_p=m.span_p,
        )
        return {
            **masked,
            "attention_mask": instances.attention_mask[index],
            "token_type_ids": instances.token_type_ids[index],
            "pair_labels": instances.pair_labels[index],
        }

    def train_batch(self, index: np.ndarray, step: int, epoch: int) -> dict[str, np.ndarray]:
        """Rows `index`: masked afresh from (seed, step), or one of the static copies (epoch % dupe_factor)."""
        if self.config.masking.dynamic:
            return self.masked(self.train, index, np.random.default_rng([self.config.seed, 1, step]))
        copy = self.static_copies[epoch % self.config.masking.dupe_factor]
        return {k: v[index] for k, v in copy.items()}

    @functools.cached_property
    def static_copies(self) -> list[dict[str, np.ndarray]]:
        """BERT's static masking: `dupe_factor` masked copies of the training set, made once."""
        rows = np.arange(len(self.train.input_ids))
        return [
            self.masked(self.train, rows, np.random.default_rng([self.config.seed, 2, copy]))
            for copy in range(self.config.masking.dupe_factor)
        ]

    def eval_batches(self, batch_size: int):
        """The same masked evaluation batches at every evaluation."""
        rng = np.random.default_rng([self.config.seed, 3])
        n = len(self.eval.input_ids)
        for start in range(0, min(n, batch_size * self.config.eval_batches) - batch_size + 1, batch_size):
            yield self.masked(self.eval, np.arange(start, start + batch_size), rng)


def this_host(host: tuple[int, int] | None = None) -> tuple[int, int]:
    """(process index, process count): jax's, unless a test stands in for one host of several."""
    return host if host is not None else (jax.process_index(), jax.process_count())


def build_pretraining_data(
    config: ml_collections.ConfigDict, workdir: str, host: tuple[int, int] | None = None
) -> PretrainingData:
    """Reads, tokenizes and cuts this host's share of the corpus into instances.

    Every host parses the document boundaries of the whole corpus (cheap) but
    tokenizes and builds instances only from its documents `index::count`.
    `host=(index, count)` builds another host's share (tests of multi-host runs).
    """
    index, count = this_host(host)
    tokenizer = get_tokenizer(config, workdir)
    documents = [] if config.data.languages else sources.load_documents(config, workdir)
    if config.data.languages:  # read per language by multilingual.build_instances
        train_docs = eval_docs = []
    elif config.data.eval_path:
        eval_docs = sources.read_documents(sources.expand_paths(config.data.eval_path), config.data.line_format)[0]
        train_docs = documents
    else:
        n_eval = max(1, int(len(documents) * config.data.eval_fraction)) if len(documents) > 1 else 0
        train_docs, eval_docs = documents[: len(documents) - n_eval], documents[len(documents) - n_eval :] or documents
    shard = lambda docs: sources.host_shard(docs, index, count)
    if not config.data.languages:  # which documents this host tokenizes (the multi-host test parses this line)
        log.info(
            "host %d of %d: training documents %s of %d, evaluation documents %s of %d",
            *(index, count, shard(range(len(train_docs))), len(train_docs)),
            *(shard(range(len(eval_docs))), len(eval_docs)),
        )
    units = unit_start_fn(tokenizer, config.masking)
    make = lambda docs, key: create_instances(
        tokenize_documents(shard(docs), tokenizer),
        max_seq_length=config.max_seq_length,
        short_seq_prob=config.short_seq_prob,
        pair_objective=config.pair_objective,
        rng=np.random.default_rng([config.seed, key]),
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        pad_id=tokenizer.pad_id,
        word_start_fn=tokenizer.word_starts,
        pack_mode=config.data.pack_mode,
        unit_start_fn=units,
    )
    if config.data.languages:
        data = PretrainingData(*multilingual.build_instances(config, make), tokenizer, config)
    else:
        data = PretrainingData(make(train_docs, 10), make(eval_docs, 11), tokenizer, config)
    log.info(
        "%d training and %d evaluation sequences on this host", len(data.train.input_ids), len(data.eval.input_ids)
    )
    return data


def make_batch_iterator(
    data: PretrainingData, config: ml_collections.ConfigDict, host: tuple[int, int] | None = None
) -> BatchIterator:
    """This host's rows of each global batch: `batch_size / process count` of its own instances."""
    local = config.batch_size // this_host(host)[1]
    return BatchIterator(len(data.train.input_ids), local, seed=config.seed)
