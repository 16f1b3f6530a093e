"""Twin fine-tuning run: bert_jax's FineTuner and transformers step by step on the same batches, dropout off.

The benchmark (`finetune_vs_transformers.py`) compares scores over seeds,
where dropout masks, batch order and the head's initial weights are random
on each side. This script removes the random part to check that what is left
is the same computation: all-MiniLM-L6-v2 with every dropout rate set to 0
(a copy of the checkpoint with a patched config.json), bert_jax's own
training batches (packed or padded, `--pack`) and the head bert_jax
initialised, copied into `transformers.BertFor{Token,Sequence}Classification`.
transformers gets the same examples per step (tokenized by its own fast
tokenizer, padded), torch's AdamW with the same decay groups, clipping and
the learning rate bert_jax's schedule gives that step. It prints both losses
and gradient norms per step and the largest differences; in float32 they
should stay at rounding level (~1e-6), growing slowly with the steps.

`--dropout-runs N` keeps the checkpoint's dropout (and head dropout 0.1) on
both sides and repeats the twin run N times with fresh dropout draws only
(same head, same batches): each framework's mean training loss over the
steps, paired per run, says whether dropout steers the two optimisations
the same way, which one forward pass's loss (RESULTS_finetune.md) does not.

    BERT_JAX_DATA=../shared/data .venv/bin/python bench/finetune_twin.py --task conll2003 --steps 30
    BERT_JAX_DATA=../shared/data .venv/bin/python bench/finetune_twin.py --task conll2003 --dropout-runs 6
"""

from __future__ import annotations

# isort: off
import bert_jax  # noqa: F401  (first: its import applies bert_jax/host_memory.py before numpy/torch start threads)
# isort: on

import argparse
import json
import os
import shutil
import sys
import tempfile

import jax
import numpy as np
import torch
import transformers
from finetune_vs_transformers import (
    DATA_DIRS,
    TASK_RECIPES,
    adamw_groups,
    first_subtoken_labels,
    first_subtoken_tags,
    minilm_dir,
)
from flax.traverse_util import flatten_dict

from bert_jax.training.finetune import FineTuner
from bert_jax.training.finetune_data import subset


def no_dropout_checkpoint(directory: str) -> str:
    """A copy of all-MiniLM-L6-v2 in `directory` whose config.json turns every dropout off."""
    copy = os.path.join(directory, "minilm-no-dropout")
    shutil.copytree(minilm_dir(), copy)
    path = os.path.join(copy, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=None)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return copy


def head_tensors(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of the task head's classifier in bert_jax's parameter tree."""
    flat = {"/".join(k): np.asarray(v) for k, v in flatten_dict(jax.device_get(params)).items()}
    head = {k: v for k, v in flat.items() if "classifier" in k and k.startswith("head")}
    (kernel,) = [v for k, v in head.items() if k.endswith("kernel")]
    (bias,) = [v for k, v in head.items() if k.endswith("bias")]
    return kernel, bias


def torch_batch(tokenizer, task, examples: list, max_length: int) -> transformers.BatchEncoding:
    """transformers' padded batch of `examples` as tensors (token tasks: labels on each word's first sub-token;
    `word_ids(row)` maps positions to words)."""
    options = {"truncation": True, "max_length": max_length, "padding": True, "return_tensors": "pt"}
    if task.head != "token":
        pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
        batch = tokenizer([e.text_a for e in examples], pairs, **options)
        batch["labels"] = torch.tensor([e.label for e in examples])
        return batch
    batch = tokenizer([list(e.words) for e in examples], is_split_into_words=True, **options)
    ids = {tag: i for i, tag in enumerate(task.labels)}
    labels = [first_subtoken_labels(batch.word_ids(i), [ids[t] for t in e.tags]) for i, e in enumerate(examples)]
    batch["labels"] = torch.tensor(labels)
    return batch


class Twin:
    """bert_jax's FineTuner and the matching transformers model, for runs from the same initial weights."""

    def __init__(self, args: argparse.Namespace, checkpoint: str, workdir: str, head_dropout: float):
        recipe = TASK_RECIPES.get(args.task, {"lr": 5e-5, "epochs": 1.0})
        config = bert_jax.load_config(f"configs/finetune/{args.task}.py")
        config.update(init_from=checkpoint, learning_rate=recipe["lr"], seed=args.seed)
        config.data.dir = os.path.join(os.environ["BERT_JAX_DATA"], DATA_DIRS[args.task])
        config.finetune.update(max_train_examples=args.train_examples, num_epochs=recipe["epochs"])
        config.finetune.update(head_dropout=head_dropout, compile_ahead=False, pack=bool(args.pack))
        self.tuner = FineTuner(config, workdir)
        self.config, self.checkpoint, self.seed = self.tuner.config, checkpoint, args.seed
        self.examples = subset(self.tuner.task.read("train"), args.train_examples)
        self.tokenizer = transformers.BertTokenizerFast.from_pretrained(checkpoint)
        token = self.tuner.task.head == "token"
        self.model_class = (
            transformers.BertForTokenClassification if token else transformers.BertForSequenceClassification
        )
        c = self.config
        dropout = f"{c.model.hidden_dropout_rate}/{c.model.attention_dropout_rate}/{head_dropout}"
        steps = f"{c.total_steps} steps ({c.warmup_steps} warmup)"
        print(f"{args.task}: dropout {dropout}, lr {c.learning_rate}, {steps}, pack {bool(args.pack)}", flush=True)

    def run(self, steps: int, dropout_seed: int | None = None, verbose: bool = True) -> dict[str, np.ndarray]:
        """`steps` twin steps from the same initial weights; per-step losses and gradient norms of both sides.

        `dropout_seed`: the seed of both sides' dropout draws (bert_jax's
        state rng, torch's global generator); None keeps bert_jax's own.
        """
        c, tuner = self.config, self.tuner
        state = tuner.init_state(self.seed)
        if dropout_seed is not None:
            state = state.replace(rng=jax.device_put(jax.random.PRNGKey(dropout_seed), tuner.replicated))
            torch.manual_seed(dropout_seed)
        model = self.model_class.from_pretrained(self.checkpoint, num_labels=tuner.task.num_labels)
        kernel, bias = head_tensors(state.params)
        with torch.no_grad():
            model.classifier.weight.copy_(torch.tensor(kernel.T))
            model.classifier.bias.copy_(torch.tensor(bias))
        groups = adamw_groups(model, c.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.adam_b1, c.adam_b2), eps=c.adam_eps)
        model.train()
        example_of_row = tuner.train_features.example_index
        out = {key: [] for key in ("jax_loss", "torch_loss", "jax_norm", "torch_norm")}
        for step in range(min(steps, c.total_steps)):
            rows = tuner.order.rows(step)
            chosen = dict.fromkeys(int(example_of_row[r]) for r in rows)  # a sentence split over rows: once
            batch = torch_batch(self.tokenizer, tuner.task, [self.examples[e] for e in chosen], c.max_seq_length)
            for group in optimizer.param_groups:
                group["lr"] = float(tuner.schedule(step))
            loss = model(**batch).loss
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), c.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad()
            state, metrics = tuner.train_step(state, step)
            values = (float(metrics["loss"]), loss.item(), float(metrics["grad_norm"]), norm)
            for key, value in zip(out, values, strict=True):
                out[key].append(value)
            if verbose:
                print(
                    f"step {step:3d}: lr {float(metrics['learning_rate']):.3e}  loss bert_jax {values[0]:.6f} "
                    f"transformers {values[1]:.6f} ({values[0] - values[1]:+.1e})  grad norm {values[2]:.4f} / "
                    f"{values[3]:.4f}",
                    flush=True,
                )
        kernel, _ = head_tensors(state.params)
        out["head_diff"] = np.abs(kernel.T - model.classifier.weight.detach().numpy()).max()
        self.last = state, model  # for evaluate()
        return {k: np.asarray(v) for k, v in out.items()}

    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Dev metrics of the last run's final weights: bert_jax's evaluation, and transformers' predictions
        decoded as the benchmark's worker does, scored by the same metric code."""
        (state, model), task = self.last, self.tuner.task
        split = next(iter(self.tuner.eval_sets))
        examples, _ = self.tuner.eval_sets[split]
        _, jax_metrics = self.tuner.predict(state.params, split)
        model.eval()
        predictions = []
        with torch.no_grad():
            for i in range(0, len(examples), self.config.batch_size):
                chunk = examples[i : i + self.config.batch_size]
                batch = torch_batch(self.tokenizer, task, chunk, self.config.max_seq_length)
                batch.pop("labels")
                ids = model(**batch).logits.argmax(-1).tolist()
                if task.head != "token":
                    predictions += ids
                    continue
                for row, example in enumerate(chunk):  # words cut off by max_seq_length: "O"
                    tags = [task.labels[i] for i in ids[row]]
                    predictions.append(first_subtoken_tags(batch.word_ids(row), tags, len(example.words), "O"))
        return jax_metrics, task.metrics(predictions, examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="conll2003", choices=sorted(DATA_DIRS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack", type=int, default=1, help="1: bert_jax's packed batches (default), 0: padded")
    parser.add_argument("--dropout-runs", type=int, default=0, help="> 0: dropout on, this many dropout seeds")
    parser.add_argument("--evaluate", action="store_true", help="both sides' dev metrics after the run(s)")
    args = parser.parse_args()
    if not os.environ.get("BERT_JAX_DATA"):
        sys.exit(f"set BERT_JAX_DATA to the folder with {DATA_DIRS[args.task]}")
    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.dropout_runs:
            twin = Twin(args, no_dropout_checkpoint(tmp), os.path.join(tmp, "workdir"), head_dropout=0.0)
            out = twin.run(args.steps)
            print(
                f"largest |difference|: loss {np.abs(out['jax_loss'] - out['torch_loss']).max():.1e}, grad norm "
                f"{np.abs(out['jax_norm'] - out['torch_norm']).max():.1e}, head kernel after the last step "
                f"{out['head_diff']:.1e}"
            )
            if args.evaluate:
                jax_metrics, torch_metrics = twin.evaluate()
                print(f"dev after {len(out['jax_loss'])} steps: bert_jax {jax_metrics}\ntransformers {torch_metrics}")
            return
        twin = Twin(args, minilm_dir(), os.path.join(tmp, "workdir"), head_dropout=0.1)
        means, scores = [], []
        for run in range(args.dropout_runs):
            out = twin.run(args.steps, dropout_seed=1000 + run, verbose=False)
            late = slice(len(out["jax_loss"]) // 2, None)
            means.append((out["jax_loss"].mean(), out["torch_loss"].mean()))
            means[-1] += (out["jax_loss"][late].mean(), out["torch_loss"][late].mean())
            print(
                f"dropout seed {1000 + run}: mean training loss over steps 0-{len(out['jax_loss']) - 1} bert_jax "
                f"{means[-1][0]:.4f} transformers {means[-1][1]:.4f}; second half {means[-1][2]:.4f} / "
                f"{means[-1][3]:.4f}",
                flush=True,
            )
            if args.evaluate:
                jax_metrics, torch_metrics = twin.evaluate()
                metric = next(iter(torch_metrics))
                scores.append((jax_metrics[metric], torch_metrics[metric]))
                print(f"  dev {metric}: bert_jax {scores[-1][0]:.2f}, transformers {scores[-1][1]:.2f}", flush=True)
        if scores:
            diff = np.subtract(*np.asarray(scores).T)
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            print(f"dev: bert_jax - transformers {diff.mean():+.2f} (se {se:.2f}, {len(diff)} dropout seeds)")
        m = np.asarray(means)
        for name, (a, b) in (("all steps", (0, 1)), ("second half", (2, 3))):
            diff = m[:, a] - m[:, b]
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            print(
                f"{name}: bert_jax {m[:, a].mean():.4f}, transformers {m[:, b].mean():.4f}, "
                f"bert_jax - transformers {diff.mean():+.4f} (se {se:.4f}, {len(diff)} dropout seeds)"
            )


if __name__ == "__main__":
    main()
