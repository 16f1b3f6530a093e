"""Host input-pipeline throughput per CPU core, against the sequences/s the train step consumes.

Why: bert_jax prepares data on the host in Python/numpy (tokenize, cut
instances, mask every batch) on the same two cores that run the train step.
The pipeline is fine only if one core produces many times more sequences per
second than a step consumes, so that its share of the machine stays small.

Stages, each timed with the process pinned to one core (so "per core" is
literal; numpy here is single-threaded anyway):

1. tokenization of the bundled sample corpus with the project's
   SentencePiece tokenizer (`train_sentencepiece(..., 4096, ...)`, then
   `load_tokenizer`), cold (fresh tokenizer, empty caches: a corpus read
   once) and warm (second pass: the word cache a large corpus reaches);
   converted to instances/s as instances-from-that-text per second;
2. instance creation (`create_instances`, NSP pairs, seq 128);
3. masking per batch (`mask_batch`), for BERT's token scheme and, for
   reference, whole-word and ALBERT's n-gram schemes;
4. the full per-step host cost of training: `build_pretraining_data(config,
   workdir)` once, then per step `BatchIterator` + `data.train_batch(index,
   step, epoch)` as `Trainer.train` runs it, and the same plus
   `partitioning.global_batch` (the hand-over to JAX).

The consumption side is the bert_jax float32 and the fastest setting of
`train_step.py`'s compare table, read from its `--json` output, or, without
it, measured here with a few bert_jax float32 steps on all cores.

Run from the repository root: `python bench/input_pipeline.py --train-json /tmp/train_step.json`;
smoke test: `python bench/input_pipeline.py --repeats 2 --skip-train`.
"""

from __future__ import annotations

# isort: off
import bert_jax  # noqa: F401  (first: its import applies bert_jax/host_memory.py before numpy/torch start threads)
# isort: on

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from common import contention_since, cpu_description, cpu_snapshot, print_table, time_fn

from bert_jax.data import sources
from bert_jax.data.pipeline import build_pretraining_data, make_batch_iterator, tokenize_documents
from bert_jax.data.pretraining import create_instances
from bert_jax.data.sample_corpus import write_sample_corpus
from bert_jax.data.tokenizers import load_tokenizer, train_sentencepiece
from bert_jax.objectives.masking import mask_batch
from bert_jax.training import partitioning

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "bert_tiny.py")
VOCAB = 4096  # what the sample corpus supports (bert_jax.data.pipeline.SAMPLE_VOCAB_LIMIT)


def pin_to_one_core() -> set[int]:
    """Restricts this process to one core and returns the previous set (restore with sched_setaffinity)."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(previous)})
    return previous


def per_second(fn: Callable[[], Any], items: float, repeats: int, min_s: float = 0.3) -> tuple[float, float]:
    """(best, median) items/s of `fn`, each timed call looping `fn` for at least `min_s` seconds.

    Sub-millisecond calls (masking one batch) are looped so that timer and
    scheduling noise do not dominate; the loop count is fixed after warm-up.
    """
    fn()
    start, loops = time.perf_counter(), 0
    while loops == 0 or time.perf_counter() - start < min_s:
        fn()
        loops += 1

    def looped() -> None:
        for _ in range(loops):
            fn()

    timing = time_fn(looped, warmup=0, repeats=repeats)
    return items * loops / timing.best, items * loops / timing.median


def train_consumption(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Sequences/s the train steps consume: from train_step.py's JSON, or measured here (bert_jax float32 only)."""
    if args.train_json:
        with open(args.train_json) as f:
            compare = json.load(f)["compare"]["models"]
        out = {}
        for model, result in compare.items():
            settings = result["settings"]
            fastest = max(settings, key=lambda s: settings[s]["seq_per_s_best"])
            out[model] = {
                "bert_jax float32": settings["bert_jax float32"]["seq_per_s_best"],
                f"fastest ({fastest})": settings[fastest]["seq_per_s_best"],
            }
        return out
    if args.skip_train:
        return {}
    from train_step import MODELS, JaxStep, Shapes, bert_jax_config, synthetic_batches

    shapes = Shapes(args.batch, args.seq, 30522, args.predictions, 0.1)
    out = {}
    for model in args.models:
        step = JaxStep(bert_jax_config(MODELS[model], shapes), synthetic_batches(shapes, 2))
        timing = time_fn(step, warmup=2, repeats=3)
        out[model] = {"bert_jax float32 (measured here)": args.batch / timing.best}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per stage (best and median)")
    parser.add_argument("--train-json", help="train_step.py --json output with the train steps' seq/s")
    parser.add_argument("--skip-train", action="store_true", help="no train-step comparison without --train-json")
    parser.add_argument("--models", nargs="+", default=["bert_tiny", "bert_small"])
    args = parser.parse_args()
    start = cpu_snapshot()
    print(f"machine: {cpu_description()}; jax {jax.__version__}", flush=True)

    consumption = train_consumption(args)  # on all cores, before pinning
    all_cores = pin_to_one_core()
    rows: list[list[Any]] = []
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        corpus = write_sample_corpus(os.path.join(workdir, "sample_corpus.txt"))
        t0 = time.perf_counter()
        train_sentencepiece([corpus], VOCAB, os.path.join(workdir, f"tokenizer-{VOCAB}"))
        spm_s = time.perf_counter() - t0
        documents = sources.read_documents([corpus])[0]
        sentences = sum(len(d) for d in documents)
        model_path = os.path.join(workdir, f"tokenizer-{VOCAB}.model")

        def instances_of(tokenized: list) -> Any:
            return create_instances(
                tokenized,
                max_seq_length=args.seq,
                short_seq_prob=0.1,
                pair_objective="nsp",
                rng=np.random.default_rng(0),
                cls_id=tokenizer.cls_id,
                sep_id=tokenizer.sep_id,
                pad_id=tokenizer.pad_id,
                word_start_fn=tokenizer.word_starts,
            )

        cold = []
        for _ in range(args.repeats):  # a fresh tokenizer each time: empty per-word and per-character caches
            tokenizer = load_tokenizer(model_path, do_lower_case=True)
            t0 = time.perf_counter()
            tokenized = tokenize_documents(documents, tokenizer)
            cold.append(time.perf_counter() - t0)
        tokens = sum(len(s) for d in tokenized for s in d)
        n_instances = len(instances_of(tokenized).input_ids)
        warm_best, warm_median = per_second(lambda: tokenize_documents(documents, tokenizer), 1.0, args.repeats, 0.0)
        print(
            f"sample corpus: {len(documents)} documents, {sentences} sentences, {tokens} tokens -> {n_instances} "
            f"NSP instances of {args.seq}; sentencepiece training ({VOCAB} pieces) took {spm_s:.1f}s (one-off)",
            flush=True,
        )
        per_instance = f"{n_instances} instances per corpus pass"
        rows.append(
            ["tokenize, cold (fresh tokenizer)", n_instances / min(cold), n_instances / np.median(cold), per_instance]
        )
        rows.append(["tokenize, warm (word cache filled)", n_instances * warm_best, n_instances * warm_median, ""])
        rates["tokenize (cold)"] = n_instances / min(cold)

        best, median = per_second(lambda: instances_of(tokenized), n_instances, args.repeats, 0.0)
        pool = instances_of(tokenized)
        real = pool.attention_mask.sum(1).mean()
        rows.append(["create_instances (NSP, word starts)", best, median, f"{real:.0f} real tokens/instance"])
        rates["create_instances"] = best
        rng = np.random.default_rng(0)
        for scheme in ("token", "whole_word", "ngram"):
            index = rng.choice(len(pool.input_ids), args.batch, replace=False)
            mask = lambda scheme=scheme, index=index: mask_batch(
                pool.input_ids[index],
                rng=rng,
                vocab_size=tokenizer.vocab_size,
                mask_id=tokenizer.mask_id,
                special_ids=tokenizer.special_ids,
                max_predictions=args.predictions,
                scheme=scheme,
                word_starts=pool.word_starts[index],
            )
            best, median = per_second(mask, args.batch, args.repeats)
            rows.append([f"mask_batch '{scheme}', batch {args.batch}", best, median, ""])
            rates[f"mask {scheme}"] = best

        overrides = {
            "model.vocab_size": 30522,
            "batch_size": args.batch,
            "max_seq_length": args.seq,
            "masking.max_predictions": args.predictions,
        }
        config = bert_jax.load_config(CONFIG_FILE, overrides)
        t0 = time.perf_counter()
        data = build_pretraining_data(config, workdir)  # the tokenizer trained above is found in the workdir
        build_s = time.perf_counter() - t0
        iterator = make_batch_iterator(data, config)
        mesh = partitioning.make_mesh(config)
        state = {"step": 0}

        def train_batch() -> dict[str, np.ndarray]:
            index = next(iterator)
            batch = data.train_batch(index, state["step"], iterator.epoch)
            state["step"] += 1
            return batch

        best, median = per_second(train_batch, args.batch, args.repeats)
        rows.append([f"per step: iterator + train_batch (batch {args.batch})", best, median, ""])
        rates["per step"] = best
        best, median = per_second(
            lambda: jax.block_until_ready(partitioning.global_batch(train_batch(), mesh)), args.batch, args.repeats
        )
        rows.append(["per step + global_batch (to JAX)", best, median, ""])
        rates["per step + global_batch"] = best
        print(f"build_pretraining_data: {build_s:.1f}s (one-off: tokenize + instances, tokenizer cached)")
    os.sched_setaffinity(0, all_cores)

    print_table(
        ["stage (one core)", "instances/s (best)", "instances/s (median)", "note"],
        rows,
        title=f"Host input pipeline per core, seq {args.seq}, P={args.predictions}, {args.repeats} repeats",
    )
    if consumption:
        step_rate = rates["per step + global_batch"]
        chain = 1.0 / sum(1.0 / rates[k] for k in ("tokenize (cold)", "create_instances", "per step + global_batch"))
        table = []
        for model, settings in consumption.items():
            for setting, seq_per_s in settings.items():
                table.append(
                    [model, setting, seq_per_s, f"{step_rate / seq_per_s:.0f}x", f"{chain / seq_per_s:.0f}x",
                     f"{100 * seq_per_s / step_rate:.2f}%"]
                )  # fmt: skip
        print_table(
            [
                "model",
                "train step",
                "seq/s consumed",
                "per-step host cost: headroom",
                "all stages (tokenize+instances+per step): headroom",
                "share of one core for per-step host work",
            ],
            table,
            title="Input pipeline (one core) vs what the train step consumes (all cores)",
        )
    print(f"\n{contention_since(start)}")


if __name__ == "__main__":
    main()
