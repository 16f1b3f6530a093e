"""Small-scale reproduction: tiny BERT, ALBERT, RoBERTa-style, SpanBERT and ELECTRA at equal training FLOPs.

Why: each family's paper claims its objective beats BERT's per unit of
compute. This script gives a fair, repeatable comparison at laptop scale, not
a winner: every family trains on the same text (WikiText-2's validation
split, one paragraph per line), with the same tokenizer (one sentencepiece
model trained once, shared), sequence length, batch size and learning-rate
schedule shape, for the same number of training FLOPs, and is evaluated on
the same held-out text (WikiText-2's test split).

FLOPs per step are XLA's own count (`compiled.cost_analysis()['flops']` of
each family's jitted train step: forward, backward and optimizer, ELECTRA's
generator included), so families with heavier steps get fewer steps:
`steps = budget / flops_per_step`, warmup 10% of the steps.

Reported per family (final evaluation, `eval_` metrics of `metrics.jsonl`):
held-out MLM accuracy (for ELECTRA: its small generator's), RTD accuracy
(ELECTRA), SBO accuracy (SpanBERT), NSP/SOP accuracy, and wall time.
Held-out MLM accuracy is measured on each family's own masking scheme
(token, n-gram, span), which is part of what differs; `--eval-scheme token`
would need a shared evaluator and is not done here.

Run from the repository root (BERT_JAX_DATA must point at the shared data):

    python bench/family_comparison.py --budget-tflop 2 --workdir /tmp/family_comparison

Smoke test: `--budget-tflop 0.05 --families bert_tiny electra_tiny`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import bert_jax  # noqa: E402
from bench.common import contention_since, cpu_description, cpu_snapshot, print_table  # noqa: E402
from bert_jax.training.trainer import Trainer  # noqa: E402

FAMILIES = {  # config -> what it stands for in the table
    "bert_tiny": "BERT (MLM + NSP, token masking)",
    "albert_tiny": "ALBERT (MLM + SOP, n-gram masking, shared layers)",
    "roberta_tiny": "RoBERTa-style (MLM only, packed sentences, dynamic masking)",
    "spanbert_tiny": "SpanBERT (span masking, MLM + SBO)",
    "electra_tiny": "ELECTRA (generator MLM + 50 x RTD)",
}
REPORTED = ("mlm_accuracy", "rtd_accuracy", "sbo_accuracy", "nsp_accuracy", "sop_accuracy", "loss")


def shared_overrides(args: argparse.Namespace, data_dir: str) -> dict:
    """What every family shares: text, held-out text, tokenizer, shapes, evaluation."""
    wikitext = os.path.join(data_dir, "wikitext-2")
    return {
        "data.source": "text",
        "data.path": os.path.join(wikitext, "valid.txt"),
        "data.line_format": "paragraphs",
        "data.eval_path": os.path.join(wikitext, "test.txt"),
        "tokenizer.vocab_size": args.vocab,
        "model.vocab_size": args.vocab,
        "max_seq_length": args.seq,
        "batch_size": args.batch,
        "learning_rate": args.learning_rate,
        "masking.max_predictions": max(1, round(0.15 * args.seq)),
        "eval_batches": args.eval_batches,
        "seed": args.seed,
    }


def family_config(name: str, overrides: dict, tokenizer_path: str, steps: int | None):
    config = bert_jax.load_config(os.path.join(REPO, "configs", f"{name}.py"), overrides)
    if tokenizer_path:
        config.tokenizer.path = tokenizer_path
        if "kind" in config.tokenizer:  # a shared sentencepiece model for every family
            config.tokenizer.kind = "sentencepiece"
        if "pad_token_id" in config.model:
            config.model.pad_token_id = 0  # the shared sentencepiece model's <pad>
    if steps:
        config.total_steps = steps
        config.warmup_steps = max(1, steps // 10)
        config.eval_every = config.checkpoint_every = steps
        config.log_every = max(1, steps // 10)
    return config


def flops_per_step(config, workdir: str) -> float:
    compiled = Trainer(config, workdir).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def final_eval(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    return evals[-1] if evals else {}


def format_metric(result: dict, key: str) -> str:
    value = result.get(f"eval_{key}")
    return "-" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> None:
    data_dir = os.environ.get("BERT_JAX_DATA")
    if not data_dir or not os.path.isdir(os.path.join(data_dir, "wikitext-2")):
        sys.exit("set BERT_JAX_DATA to the shared data folder (it must hold wikitext-2/)")
    overrides = shared_overrides(args, data_dir)
    os.makedirs(args.workdir, exist_ok=True)
    tokenizer_path = os.path.join(args.workdir, "shared_tokenizer", f"tokenizer-{args.vocab}.model")
    if not os.path.isfile(tokenizer_path):  # trained once, by a throwaway BERT run's get_tokenizer
        from bert_jax.data.pipeline import get_tokenizer

        get_tokenizer(family_config("bert_tiny", overrides, "", None), os.path.dirname(tokenizer_path))
    print(cpu_description())
    rows, start = [], cpu_snapshot()
    for name in args.families:
        workdir = os.path.join(args.workdir, name)
        config = family_config(name, overrides, tokenizer_path, None)
        per_step = flops_per_step(config, workdir + "_compile")
        steps = max(1, round(args.budget_tflop * 1e12 / per_step))
        config = family_config(name, overrides, tokenizer_path, steps)
        params = bert_jax.count_params(bert_jax.build_model(config), include_heads=True)
        began = time.perf_counter()
        Trainer(config, workdir).train()
        seconds = time.perf_counter() - began
        result = final_eval(workdir)
        rows.append(
            [name, FAMILIES.get(name, ""), f"{params / 1e6:.2f}M", f"{per_step / 1e9:.2f}", steps, f"{seconds:.0f}"]
            + [format_metric(result, k) for k in REPORTED]
        )
        print(f"{name}: {steps} steps, {seconds:.0f} s, {result}", flush=True)
    headers = ["config", "family", "params (with heads)", "GFLOP/step", "steps", "wall s"]
    print_table(headers + [f"held-out {k}" for k in REPORTED], rows, title=f"{args.budget_tflop} TFLOP per family")
    print(contention_since(start))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--budget-tflop", type=float, default=2.0, help="training FLOPs per family (XLA's count)")
    parser.add_argument("--workdir", default="/tmp/bert_jax_family_comparison")
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
