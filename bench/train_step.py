"""Pretraining train-step throughput and MFU of bert_jax against Hugging Face BertForPreTraining, same run.

Why: the project's target is a train step at least as fast as the best
PyTorch setting on the same machine, measured in the same run (so a busy spell
of this shared VM hits both). One step is what `Trainer` runs: MLM (gathered at
the masked positions) + NSP loss, backward, global-norm clipping and AdamW.

Candidates, per model size (bert_tiny L2/H128/A2/I512 and BERT-small
L4/H512/A8/I2048; batch 16 x seq 128, vocab 30522, P=20 masked slots,
dropout 0.1 by default):

- PyTorch float32 eager: `transformers.BertForPreTraining` (its default
  attention implementation) + `torch.optim.AdamW(fused=True)` (no decay on
  biases and LayerNorm, eps 1e-6) + `clip_grad_norm_(1.0)`; labels are -100
  except at the masked positions, plus `next_sentence_label`. The fused
  AdamW is PyTorch's best CPU setting: the default for-loop implementation
  took ~0.7 s per step on bert_tiny alone;
- PyTorch bfloat16 autocast: the same under `torch.autocast("cpu", bfloat16)`
  (left out with a note where torch's bf16 matmul has no fast kernel,
  `common.torch_bf16_is_slow`);
- the same two with the MLM head on the masked positions only ("gathered
  head": `model.bert`, gather, `model.cls`, the same modules and weights):
  Hugging Face's forward computes the head on all B x S tokens, bert_jax on
  B x P, so these rows compare equal work (`--no-gathered` drops them);
- bert_jax float32 and bfloat16 compute (`model.dtype`), via `Trainer`.

FLOPs per step are counted analytically (matmuls only, multiply-add = 2 FLOPs,
backward = 2x forward, so 6 FLOPs per weight per token for the whole step):
6 x (encoder matmul weights 4H^2 + 2HI per layer) x tokens, plus attention
scores and the weighted sum (3 x 4 x B x S^2 x H per layer), plus the pooler
and NSP classifier per sequence, plus the MLM head (H^2 transform and H x V
tied decoder) on the B x P masked slots only. Embedding lookups, LayerNorm,
softmax, GELU, dropout and the optimizer are not counted. The same count is
used for every candidate: Hugging Face computes the MLM head on all B x S
tokens, which this count treats as wasted work (it lowers PyTorch's MFU).

MFU is reported against the measured JAX float32 matmul peak (every row) and
against each row's own framework/dtype peak (torch bfloat16 for the autocast
row), peaks measured before and after the timings, the higher one used.

Sections (`--sections`, comma-separated):

- compare (default): the table above, timings interleaved round by round;
- variants: where bert_jax's float32 step (`--variants-model`, bert_tiny by
  default) spends its time, by timing variants (dropout off, tanh GELU,
  unrolled layers, `jax.nn.dot_product_attention`, another PRNG, no clipping,
  the MLM loss written without a scatter, bfloat16 compute,
  forward-only and forward+backward-only steps);
  config changes and monkeypatches applied here only, the package is not edited;
- trace: one `jax.profiler` trace of the step (`--trace-model`,
  `--trace-dtype`), summarised per XLA op (thunk) and per part of the model;
- flags: the bert_jax train step under several XLA_FLAGS, one child process
  per setting (XLA reads the flags once, at backend start-up); a flag this
  jaxlib does not know aborts the child and is reported as rejected.

Run from the repository root, e.g. `python bench/train_step.py --json /tmp/train_step.json`;
smoke test: `python bench/train_step.py --models bert_tiny --vocab 512 --seq 32 --repeats 2
--sections compare,variants,trace`.
"""

from __future__ import annotations

# isort: off
import bert_jax  # noqa: F401  (first: its import applies bert_jax/host_memory.py before numpy/torch start threads)
# isort: on

import argparse
import collections
import contextlib
import dataclasses
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from common import (
    bert_forward_flops,
    contention_since,
    cpu_description,
    cpu_snapshot,
    jax_matmul_gflops,
    print_table,
    slow_bf16_note,
    time_fn,
    time_interleaved,
    torch_bf16_is_slow,
    torch_matmul_gflops,
)

from bert_jax.models import attention as attention_module
from bert_jax.models import embeddings as embeddings_module
from bert_jax.models import encoder as encoder_module
from bert_jax.models import heads as heads_module
from bert_jax.objectives import losses as losses_module
from bert_jax.training import partitioning
from bert_jax.training.trainer import Trainer

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "bert_tiny.py")
MODELS: dict[str, dict[str, int]] = {
    "bert_tiny": {"num_layers": 2, "hidden_size": 128, "num_heads": 2, "intermediate_size": 512},
    "bert_small": {"num_layers": 4, "hidden_size": 512, "num_heads": 8, "intermediate_size": 2048},
}
MASK_ID = 4  # any id below 5: synthetic text ids are drawn from [5, vocab)


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The batch shapes every candidate trains on."""

    batch: int
    seq: int
    vocab: int
    predictions: int
    dropout: float


def train_step_flops(sizes: dict[str, int], shapes: Shapes) -> float:
    """Analytic matmul FLOPs of one train step (see the module docstring for what is counted)."""
    h, layers, inter = sizes["hidden_size"], sizes["num_layers"], sizes["intermediate_size"]
    encoder = 3 * bert_forward_flops(shapes.batch, shapes.seq, layers, h, inter, pooler=True)
    nsp = 6 * shapes.batch * h * 2
    mlm = 6 * shapes.batch * shapes.predictions * (h * h + h * shapes.vocab)
    return float(encoder + nsp + mlm)


def synthetic_batches(shapes: Shapes, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Batches shaped like the pipeline's: [CLS] A [SEP] B [SEP], ~10% short rows, 15% (at most P) masked.

    Masked positions are distinct, ascending and inside the row's text, so the
    PyTorch labels (-100 elsewhere) mark exactly the same predictions.
    """
    rng = np.random.default_rng(seed)
    b, n, p = shapes.batch, shapes.seq, shapes.predictions
    out = []
    for _ in range(count):
        lengths = np.where(rng.random(b) < 0.9, n, rng.integers(max(n // 4, 5), n + 1, b))
        ids = rng.integers(5, shapes.vocab, (b, n)).astype(np.int32)
        columns = np.arange(n)[None]
        ids[columns >= lengths[:, None]] = 0
        ids[:, 0] = 2
        split = lengths // 2
        ids[np.arange(b), split] = 3
        ids[np.arange(b), lengths - 1] = 3
        batch = {
            "input_ids": ids,
            "attention_mask": (columns < lengths[:, None]).astype(np.int32),
            "token_type_ids": ((columns > split[:, None]) & (columns < lengths[:, None])).astype(np.int32),
            "masked_positions": np.zeros((b, p), np.int32),
            "masked_ids": np.zeros((b, p), np.int32),
            "masked_weights": np.zeros((b, p), np.float32),
            "pair_labels": rng.integers(0, 2, b).astype(np.int32),
        }
        for row in range(b):
            text = np.setdiff1d(np.arange(1, lengths[row] - 1), [split[row]])
            k = min(p, max(1, round(0.15 * lengths[row])), len(text))
            positions = np.sort(rng.choice(text, k, replace=False))
            batch["masked_positions"][row, :k] = positions
            batch["masked_ids"][row, :k] = ids[row, positions]
            batch["masked_weights"][row, :k] = 1.0
            ids[row, positions[rng.random(k) < 0.8]] = MASK_ID
        out.append(batch)
    return out


def bert_jax_config(sizes: dict[str, int], shapes: Shapes, **overrides: Any) -> ml_collections.ConfigDict:
    """The bert_tiny config file reshaped to `sizes` and `shapes`; `overrides` use load_config's dotted names."""
    values = {f"model.{k}": v for k, v in sizes.items()}
    values.update(
        {
            "model.embedding_size": sizes["hidden_size"],
            "model.vocab_size": shapes.vocab,
            "model.hidden_dropout_rate": shapes.dropout,
            "model.attention_dropout_rate": shapes.dropout,
            "batch_size": shapes.batch,
            "max_seq_length": shapes.seq,
            "masking.max_predictions": shapes.predictions,
            "optimizer": "adamw",
        }
    )
    values.update(overrides)
    return bert_jax.load_config(CONFIG_FILE, values)


class JaxStep:
    """A zero-argument bert_jax train step on device-resident batches (the state is donated, so kept here).

    `patch` is entered while the step is traced (at `compile`), so monkeypatched
    model or loss code ends up in the compiled program and nowhere else.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        batches: list[dict[str, np.ndarray]],
        patch: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        with patch():
            self.trainer = Trainer(config, "unused_workdir")
            start = time.perf_counter()
            self.compiled = self.trainer.compile()
            self.compile_s = time.perf_counter() - start
            self.state = self.trainer._init(jax.random.PRNGKey(0))
        self.batches = [partitioning.global_batch(b, self.trainer.mesh) for b in batches]
        self.calls = 0

    def __call__(self) -> jax.Array:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        self.state, metrics = self.trainer._train_step(self.state, batch)
        return metrics["loss"]


class JaxPartialStep:
    """Only the forward (loss and metrics) or forward+backward (gradients) of the train step, for the breakdown."""

    def __init__(self, config: ml_collections.ConfigDict, batches: list[dict[str, np.ndarray]], backward: bool):
        trainer = Trainer(config, "unused_workdir")

        def forward(params, batch, rng):
            return trainer.loss_fn(params, batch, rng, None)

        fn = jax.grad(forward, has_aux=True) if backward else forward
        self.params = trainer._init(jax.random.PRNGKey(0)).params
        self.batches = [partitioning.global_batch(b, trainer.mesh) for b in batches]
        self.rng = jax.random.PRNGKey(1)
        self.compiled = jax.jit(fn).lower(self.params, self.batches[0], self.rng).compile()
        self.calls = 0

    def __call__(self) -> Any:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        return self.compiled(self.params, batch, self.rng)


class TorchStep:
    """A zero-argument Hugging Face BertForPreTraining + AdamW + clipping step, float32 or bfloat16 autocast."""

    def __init__(
        self,
        sizes: dict[str, int],
        shapes: Shapes,
        batches: list[dict[str, np.ndarray]],
        autocast: bool,
        gathered_head: bool = False,
    ):
        import torch
        import transformers

        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=shapes.vocab,
            hidden_size=sizes["hidden_size"],
            num_hidden_layers=sizes["num_layers"],
            num_attention_heads=sizes["num_heads"],
            intermediate_size=sizes["intermediate_size"],
            hidden_act="gelu",
            hidden_dropout_prob=shapes.dropout,
            attention_probs_dropout_prob=shapes.dropout,
            max_position_embeddings=512,
            type_vocab_size=2,
        )
        self.model = transformers.BertForPreTraining(config).train()
        named = list(self.model.named_parameters())
        no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
        # fused: the default (for-loop) CPU AdamW takes ~0.7 s per step on bert_tiny's 4.4M parameters, fused ~2 ms
        self.optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-6, fused=True)
        self.autocast, self.gathered_head, self.torch = autocast, gathered_head, torch
        self.inputs = [self._inputs(b, shapes) for b in batches]
        self.calls = 0

    def _inputs(self, batch: dict[str, np.ndarray], shapes: Shapes) -> dict[str, Any]:
        torch = self.torch
        labels = np.full((shapes.batch, shapes.seq), -100, np.int64)
        rows, slots = np.nonzero(batch["masked_weights"])
        labels[rows, batch["masked_positions"][rows, slots]] = batch["masked_ids"][rows, slots]
        return {
            "masked_positions": torch.from_numpy(batch["masked_positions"].astype(np.int64)),
            "masked_ids": torch.from_numpy(batch["masked_ids"].astype(np.int64)),
            "masked_weights": torch.from_numpy(batch["masked_weights"]),
            "input_ids": torch.from_numpy(batch["input_ids"].astype(np.int64)),
            "attention_mask": torch.from_numpy(batch["attention_mask"].astype(np.int64)),
            "token_type_ids": torch.from_numpy(batch["token_type_ids"].astype(np.int64)),
            "labels": torch.from_numpy(labels),
            "next_sentence_label": torch.from_numpy(batch["pair_labels"].astype(np.int64)),
        }

    def __call__(self) -> Any:
        torch = self.torch
        inputs = self.inputs[self.calls % len(self.inputs)]
        self.calls += 1
        self.optimizer.zero_grad(set_to_none=True)
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with amp:
            loss = self._gathered_loss(inputs) if self.gathered_head else self._hf_loss(inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.detach()

    def _hf_loss(self, inputs: dict[str, Any]) -> Any:
        """BertForPreTraining's own loss: MLM logits for all B x S tokens, -100 labels ignored."""
        keys = ("input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label")
        return self.model(**{k: inputs[k] for k in keys}).loss

    def _gathered_loss(self, inputs: dict[str, Any]) -> Any:
        """What bert_jax computes: the same modules, the MLM head applied to the B x P masked slots only."""
        torch = self.torch
        out = self.model.bert(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
        )
        hidden = out.last_hidden_state
        index = inputs["masked_positions"][..., None].expand(-1, -1, hidden.shape[-1])
        logits = self.model.cls.predictions(torch.gather(hidden, 1, index)).float()
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), inputs["masked_ids"].flatten(), reduction="none")
        weights = inputs["masked_weights"].flatten()
        pair = self.model.cls.seq_relationship(out.pooler_output).float()
        nsp = torch.nn.functional.cross_entropy(pair, inputs["next_sentence_label"])
        return (ce * weights).sum() / weights.sum().clamp(min=1.0) + nsp


def code_version() -> str:
    """The repository's commit (and whether bert_jax has uncommitted changes), so results name the code they timed."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "bert_jax"], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return commit.stdout.strip() + (" + uncommitted bert_jax changes" if dirty.stdout.strip() else "")


def measure_peaks(dtypes: tuple[str, ...] = ("JAX float32", "JAX bfloat16", "torch float32", "torch bfloat16")):
    """Matmul GFLOP/s per framework and dtype; JAX bfloat16 is the better of a bf16 and a float32 result."""
    fns = {
        "JAX float32": lambda: jax_matmul_gflops("float32"),
        "JAX bfloat16": lambda: max(
            jax_matmul_gflops("bfloat16"), jax_matmul_gflops("bfloat16", preferred_element_type="float32")
        ),
        "torch float32": lambda: torch_matmul_gflops("float32"),
        "torch bfloat16": lambda: torch_matmul_gflops("bfloat16"),
    }
    return {k: fns[k]() for k in dtypes}


# ---------------------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------------------


def compare(args: argparse.Namespace, shapes: Shapes) -> dict[str, Any]:
    """The bert_jax vs PyTorch table per model; returns the numbers for `--json` and input_pipeline.py."""
    peaks_before = measure_peaks()
    results: dict[str, Any] = {"peaks_before": peaks_before, "models": {}}
    rows_by_model = {}
    for name in args.models:
        sizes = MODELS[name]
        batches = synthetic_batches(shapes, args.batches)
        candidates: dict[str, tuple[Callable[[], Any], str]] = {
            "torch float32 eager": (TorchStep(sizes, shapes, batches, autocast=False), "torch float32"),
            "torch bfloat16 autocast": (TorchStep(sizes, shapes, batches, autocast=True), "torch bfloat16"),
        }
        if args.gathered:
            candidates["torch float32 eager, gathered head"] = (
                TorchStep(sizes, shapes, batches, autocast=False, gathered_head=True),
                "torch float32",
            )
            candidates["torch bfloat16 autocast, gathered head"] = (
                TorchStep(sizes, shapes, batches, autocast=True, gathered_head=True),
                "torch bfloat16",
            )
        if torch_bf16_is_slow(peaks_before):
            print(slow_bf16_note(peaks_before))
            for setting in [s for s in candidates if s.startswith("torch") and "bfloat16" in s]:
                del candidates[setting]
        f32 = JaxStep(bert_jax_config(sizes, shapes), batches)
        bf16 = JaxStep(bert_jax_config(sizes, shapes, **{"model.dtype": "bfloat16"}), batches)
        candidates["bert_jax float32"] = (f32, "JAX float32")
        candidates["bert_jax bfloat16"] = (bf16, "JAX bfloat16")
        print(f"{name}: bert_jax compile {f32.compile_s:.1f}s (float32), {bf16.compile_s:.1f}s (bfloat16)", flush=True)
        timings = time_interleaved({k: fn for k, (fn, _) in candidates.items()}, args.warmup, args.repeats)
        rows_by_model[name] = (candidates, timings)
    peaks_after = measure_peaks()
    peaks = {k: max(peaks_before[k], peaks_after[k]) for k in peaks_before}
    results["peaks_after"] = peaks_after
    print_table(
        ["matmul 2048^3", "GFLOP/s before", "GFLOP/s after", "peak used (max)"],
        [[k, peaks_before[k], peaks_after[k], peaks[k]] for k in peaks],
        title="Measured matmul peaks (best of 10 each)",
    )
    for name, (candidates, timings) in rows_by_model.items():
        flops = train_step_flops(MODELS[name], shapes)
        tokens = shapes.batch * shapes.seq
        rows, model_results = [], {}
        for setting, (_, peak_key) in candidates.items():
            t = timings[setting]
            gflops = flops / t.best / 1e9
            rows.append(
                [
                    setting,
                    tokens / t.best,
                    tokens / t.median,
                    shapes.batch / t.best,
                    shapes.batch / t.median,
                    1e3 * t.best,
                    1e3 * t.median,
                    gflops,
                    f"{100 * gflops / peaks['JAX float32']:.1f}%",
                    f"{100 * gflops / peaks[peak_key]:.1f}% ({peak_key})",
                    f"{t.n_clean}/{len(t.times)}",
                ]
            )
            model_results[setting] = {
                "best_s": t.best,
                "median_s": t.median,
                "seq_per_s_best": shapes.batch / t.best,
                "seq_per_s_median": shapes.batch / t.median,
                "times": t.times,
                "others": t.others,
            }
        print_table(
            [
                "setting",
                "tokens/s (best)",
                "tokens/s (median)",
                "seq/s (best)",
                "seq/s (median)",
                "ms/step (best)",
                "ms/step (median)",
                "GFLOP/s",
                "MFU vs JAX f32 peak",
                "MFU vs own peak",
                "clean repeats",
            ],
            rows,
            title=f"{name} {MODELS[name]}: train step, batch {shapes.batch} x seq {shapes.seq}, vocab {shapes.vocab}, "
            f"P={shapes.predictions}, dropout {shapes.dropout}; {flops / 1e9:.4g} GFLOP/step; "
            f"{args.repeats} interleaved repeats",
        )
        torch_rows = [s for s in timings if s.startswith("torch")]
        hf_rows = [s for s in torch_rows if "gathered" not in s]
        best_hf = min(hf_rows, key=lambda s: timings[s].best)
        best_torch = min(torch_rows, key=lambda s: timings[s].best)
        for reference, what in ((best_hf, "best Hugging Face forward"), (best_torch, "best PyTorch row")):
            for setting in ("bert_jax float32", "bert_jax bfloat16"):
                ratio = timings[reference].best / timings[setting].best
                ratio_median = timings[reference].median / timings[setting].median
                print(
                    f"{name}: {setting} throughput / {reference} ({what}): {ratio:.2f}x (best), "
                    f"{ratio_median:.2f}x (median)"
                )
            if reference == best_torch:
                break
        results["models"][name] = {
            "flops": flops,
            "best_hf": best_hf,
            "best_torch": best_torch,
            "settings": model_results,
        }
    results["peaks"] = peaks
    return results


# ---------------------------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------------------------


class DotProductAttention(attention_module.SelfAttention):
    """SelfAttention with `jax.nn.dot_product_attention` in place of the einsum/softmax (no attention dropout).

    Only `attend`, the computation between the projections, changes; the
    parameters and projection dots are the package's own.
    """

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
        return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype), implementation="xla")


class SeparateProjections(attention_module.SelfAttention):
    """SelfAttention with three [tokens, H] x [H, H] matmuls for q, k, v instead of the package's fused one."""

    def project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        cfg = self.config
        dtype = attention_module.compute_dtype(cfg)
        out = []
        for name in attention_module.QKV:
            kernel, bias = attention_module.ProjectionParams(
                cfg, (cfg.num_heads, cfg.hidden_size // cfg.num_heads), name=name
            )()
            dims = (((x.ndim - 1,), (0,)), ((), ()))
            out.append(
                attention_module.mixed_precision_dot_general(x.astype(dtype), kernel.astype(dtype), dims)
                + bias.astype(dtype)
            )
        return tuple(out)


@contextlib.contextmanager
def separate_projections() -> Iterator[None]:
    with patched(encoder_module, "SelfAttention", SeparateProjections):
        yield


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Replaces `module.name` while tracing (the package looks these names up at call time)."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def one_hot_cross_entropy() -> Iterator[None]:
    """The cross-entropies written with a one-hot label instead of a gather.

    `optax.softmax_cross_entropy_with_integer_labels` gathers the label's
    logit (`take_along_axis`), whose gradient is a scatter-add into a
    [B, P, V] zero array; `-(one_hot * log_softmax).sum()` gives the same
    loss with an elementwise gradient.
    """

    def one_hot_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
        one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return -(one_hot * jax.nn.log_softmax(logits, axis=-1)).sum(-1)

    with patched(losses_module.optax, "softmax_cross_entropy_with_integer_labels", one_hot_ce):
        yield


@contextlib.contextmanager
def dot_product_attention() -> Iterator[None]:
    """Makes the encoder build `DotProductAttention` layers (the encoder module looks the name up per call)."""
    with patched(encoder_module, "SelfAttention", DotProductAttention):
        yield


@contextlib.contextmanager
def flax_dropout() -> Iterator[None]:
    """flax's `nn.Dropout` (a threefry word per element) instead of bert_jax's hashed `Dropout`."""
    with contextlib.ExitStack() as stack:
        for module in (attention_module, embeddings_module, encoder_module, heads_module):
            stack.enter_context(patched(module, "Dropout", nn.Dropout))
        yield


@contextlib.contextmanager
def default_prng(impl: str) -> Iterator[None]:
    """Another PRNG implementation for the dropout masks (the train state's key is made under it too)."""
    original = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", impl)
    try:
        yield
    finally:
        jax.config.update("jax_default_prng_impl", original)


BASELINE = "baseline (float32, dropout 0.1, exact gelu, package defaults)"


def variants(args: argparse.Namespace, shapes: Shapes) -> dict[str, float]:
    """Times float32 train-step variants (`--variants-model`) round-robin; prints ms/step and the change."""
    sizes = MODELS[args.variants_model]
    batches = synthetic_batches(shapes, args.batches)
    no_attention_dropout = {"model.attention_dropout_rate": 0.0}
    specs: dict[str, tuple[dict[str, Any], Callable[[], contextlib.AbstractContextManager]]] = {
        BASELINE: ({}, contextlib.nullcontext),
        "flax nn.Dropout (32 random bits per element)": ({}, flax_dropout),
        "scan_unroll=1 (the scan as a loop)": ({"model.scan_unroll": 1}, contextlib.nullcontext),
        "three Q/K/V matmuls instead of one fused": ({}, separate_projections),
        "no dropout at all": ({"model.hidden_dropout_rate": 0.0, **no_attention_dropout}, contextlib.nullcontext),
        "no attention-probs dropout": (no_attention_dropout, contextlib.nullcontext),
        "jax.nn.dot_product_attention (no attention dropout)": (no_attention_dropout, dot_product_attention),
        "dropout RNG: unsafe_rbg instead of threefry": ({}, lambda: default_prng("unsafe_rbg")),
        "activation gelu_tanh": ({"model.activation": "gelu_tanh"}, contextlib.nullcontext),
        "no gradient clipping": ({"max_grad_norm": 0.0}, contextlib.nullcontext),
        "bfloat16 compute (model.dtype)": ({"model.dtype": "bfloat16"}, contextlib.nullcontext),
        "one-hot cross-entropy (no scatter)": ({}, one_hot_cross_entropy),
        f"vocab 4096 instead of {shapes.vocab} (bert_tiny.py's own)": (
            {"model.vocab_size": 4096},
            contextlib.nullcontext,
        ),
    }
    fns: dict[str, Callable[[], Any]] = {}
    for label, (overrides, patch) in specs.items():
        if args.variants_filter and label != BASELINE and not any(f in label for f in args.variants_filter):
            continue
        config = bert_jax_config(sizes, shapes, **overrides)
        step_batches = batches
        if "model.vocab_size" in overrides:  # keep ids inside the smaller table
            step_batches = [
                {
                    k: (v % overrides["model.vocab_size"] if k in ("input_ids", "masked_ids") else v)
                    for k, v in b.items()
                }
                for b in batches
            ]
        fns[label] = JaxStep(config, step_batches, patch)
    base_config = bert_jax_config(sizes, shapes)
    fns["part: forward only (loss + metrics, dropout on)"] = JaxPartialStep(base_config, batches, backward=False)
    fns["part: forward + backward (gradients, no optimizer)"] = JaxPartialStep(base_config, batches, backward=True)
    timings = time_interleaved(fns, args.warmup, args.repeats)
    base = timings[next(iter(fns))]
    rows = [
        [label, 1e3 * t.best, 1e3 * t.median, f"{100 * (t.best / base.best - 1):+.0f}%", f"{t.n_clean}/{len(t.times)}"]
        for label, t in timings.items()
    ]
    print_table(
        [
            f"{args.variants_model} float32 variant",
            "ms/step (best)",
            "ms/step (median)",
            "vs baseline (best)",
            "clean repeats",
        ],
        rows,
        title=f"Where the {args.variants_model} step goes: variants, batch {shapes.batch} x seq {shapes.seq}, "
        f"vocab {shapes.vocab}, "
        f"{args.repeats} interleaved repeats",
    )
    return {label: t.best for label, t in timings.items()}


# ---------------------------------------------------------------------------------------------------------------
# trace
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HloOp:
    """What the profile summary needs of one HLO instruction."""

    shape: str  # result shape without layout, '(tuple)' for tuples
    op_name: str  # jax's op_name metadata: the jax function path, `transpose(jvp(...))` for the backward pass
    operands: tuple[str, ...]  # names of the instructions it reads


def _op_metadata(hlo_text: str) -> dict[str, HloOp]:
    """HLO instruction name -> `HloOp`, from compiled HLO text."""
    out = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\([^()]*\)|\S+) [\w\-]+\(([^)]*)\)", line)
        if match:
            shape = "(tuple)" if match.group(2).startswith("(") else match.group(2).split("{")[0]
            op_name = re.search(r'op_name="([^"]*)"', line)
            operands = tuple(re.findall(r"%([\w.\-]+)", match.group(3)))
            out[match.group(1)] = HloOp(shape, op_name.group(1) if op_name else "", operands)
    return out


def _part(op: HloOp, meta: dict[str, HloOp], vocab: int | None) -> str:
    """Which part of the step an op belongs to, from its jax op_name and its result and operand shapes.

    `vocab` marks vocab-sized ops by shape (the loss and metrics outside the
    model); None when the vocabulary size is also a model dimension.
    """
    name = op.op_name
    direction = "backward" if "transpose(" in name else "forward" if "jvp(" in name else None
    shapes = [op.shape] + [meta[o].shape for o in op.operands if o in meta]
    if "dropout" in name or "_bernoulli" in name or "_uniform" in name or "threefry" in name:
        where = "dropout masks (RNG)"
    elif direction is None:
        return "no jvp in op_name: AdamW, clipping; XLA-made converts, buffer init"
    elif "mlm_head" in name or (vocab and any(f"{vocab}]" in s or f"{vocab}," in s for s in shapes)):
        where = "vocab-sized: MLM decoder, softmax-CE, accuracy"
    elif "BertModel" not in name:
        where = "losses and metrics (not vocab-sized)"
    elif "attention/" in name and "attention_layer_norm" not in name:
        where = "encoder attention (incl. Q/K/V/O projections)"
    elif "encoder" in name:
        where = "encoder FFN, LayerNorm, residual, scan"
    elif "embeddings" in name:
        where = "embeddings"
    else:
        where = "pooler, NSP head"
    return f"{where}, {direction}" if direction else where


def trace(args: argparse.Namespace, shapes: Shapes) -> None:
    """Profiles a few steps with `jax.profiler` and prints the time per XLA op and per part of the step.

    XLA:CPU's thunk runtime emits one profiler event per executed thunk (fusion,
    library matmul, loop) on the thread that ran it; the two cores run
    independent thunks concurrently, so op times add up to more than the wall
    time. Shares are of the summed op time.
    """
    sizes = MODELS[args.trace_model]
    config = bert_jax_config(sizes, shapes, **{"model.dtype": args.trace_dtype})
    step = JaxStep(config, synthetic_batches(shapes, args.batches))
    meta = _op_metadata(step.compiled.as_text())
    timing = time_fn(step, warmup=2, repeats=3)
    steps = args.trace_steps
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with jax.profiler.trace(tmp):
            for _ in range(steps):
                step().block_until_ready()
        traced_wall = (time.perf_counter() - start) / steps
        files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        data = jax.profiler.ProfileData.from_file(files[0])
    dims = {*sizes.values(), shapes.batch, shapes.seq, shapes.predictions}
    vocab = None if shapes.vocab in dims else shapes.vocab
    per_op: collections.Counter[str] = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            # HLO ops only (not the executor's wrappers and waits), and only leaves: a while loop's event
            # encloses the events of its body's ops, which are counted themselves.
            events = sorted((e for e in line.events if e.name in meta), key=lambda e: (e.start_ns, -e.duration_ns))
            for event, following in zip(events, [*events[1:], None]):
                if following is None or following.start_ns >= event.start_ns + event.duration_ns:
                    per_op[event.name] += event.duration_ns / 1e6 / steps
    total = sum(per_op.values())
    by_part: collections.Counter[str] = collections.Counter()
    for op, ms in per_op.items():
        by_part[_part(meta[op], meta, vocab)] += ms
    print(
        f"\n{args.trace_model} {args.trace_dtype} step: {1e3 * timing.best:.0f} ms untraced (best of 3), "
        f"{1e3 * traced_wall:.0f} ms "
        f"traced; summed op time {total:.0f} ms/step over both cores"
    )
    print_table(
        ["part of the step", "op ms/step", "share"],
        [[part, ms, f"{100 * ms / total:.0f}%"] for part, ms in by_part.most_common()],
        title=f"{args.trace_model} {args.trace_dtype} train step by part (jax.profiler, {steps} steps)",
    )
    rows = []
    for op, ms in per_op.most_common(args.trace_top):
        short = re.sub(r"^jit\(step\)/", "", meta[op].op_name).replace("encoder/while/body/closed_call/", "")
        operands = ", ".join(meta[o].shape for o in meta[op].operands if o in meta)
        rows.append([op, meta[op].shape, operands[:70], short[-90:], ms, f"{100 * ms / total:.1f}%"])
    print_table(
        ["XLA op", "result", "operands", "jax op_name", "ms/step", "share"],
        rows,
        title=f"Top {args.trace_top} XLA ops of the {args.trace_model} {args.trace_dtype} train step",
    )


# ---------------------------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------------------------

FLAG_SETS: dict[str, str] = {
    "legacy (non-thunk) runtime": "--xla_cpu_use_thunk_runtime=false",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "no YNNPACK reductions": "--xla_cpu_experimental_ynn_fusion_type=-reduce",
    "YNNPACK only for single dots": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
    "YNNPACK off": "--xla_cpu_experimental_ynn_fusion_type=",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "single-threaded Eigen": "--xla_cpu_multi_thread_eigen=false",
    "concurrency-optimized scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "vector width 512": "--xla_cpu_prefer_vector_width=512",
    "no fusion emitters": "--xla_cpu_use_fusion_emitters=false",
    "max ISA AVX2": "--xla_cpu_max_isa=AVX2",
    "unknown flag (control)": "--xla_cpu_no_such_flag=true",
}


def flags_worker(args: argparse.Namespace, shapes: Shapes) -> dict[str, Any]:
    """In a child with XLA_FLAGS set: compile and time the bert_jax float32 step of each `--flag-models`."""
    out = {}
    for name in args.flag_models:
        step = JaxStep(bert_jax_config(MODELS[name], shapes), synthetic_batches(shapes, args.batches))
        hlo = step.compiled.as_text()
        timing = time_fn(step, warmup=args.warmup, repeats=args.repeats, min_warmup_s=1.0)
        kernels = {k: hlo.count(f"{k}") for k in ("ynn_fusion", "xnn_fusion", "onednn", "__onednn")}
        out[name] = {
            "best": timing.best,
            "median": timing.median,
            "compile_s": step.compile_s,
            "clean": f"{timing.n_clean}/{len(timing.times)}",
            "kernels": {k: v for k, v in kernels.items() if v},
        }
    return out


def _run_flag_child(base_cmd: list[str], xla_flags: str) -> tuple[dict | None, str]:
    """One `flags_worker` child under `xla_flags`: (results or None, the error line when it was rejected)."""
    proc = subprocess.run(base_cmd, env=dict(os.environ, XLA_FLAGS=xla_flags), capture_output=True, text=True)
    result = next((json.loads(x[7:]) for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if result is not None:
        return result, ""
    errors = [x for x in proc.stderr.splitlines() if "flag" in x.lower() or "error" in x.lower()]
    return None, (errors or proc.stderr.strip().splitlines() or ["no output"])[-1].split("] ", 1)[-1][:120]


def flags(args: argparse.Namespace) -> None:
    """Runs `flags_worker` per FLAG_SETS entry, each in its own child process, and tabulates the step times.

    Children cannot be interleaved step by step, so the whole list is run
    `--flag-rounds` times (each setting's best child counts) and "default"
    appears twice per round: the spread of the default runs is the noise
    floor, and settings are compared with the best default run.
    """
    base_cmd = [sys.executable, os.path.abspath(__file__), "--worker", "flags"]
    passthrough = ["--batch", "--seq", "--vocab", "--predictions", "--dropout", "--repeats", "--warmup", "--batches"]
    for flag in passthrough:
        base_cmd += [flag, str(getattr(args, flag[2:]))]
    base_cmd += ["--flag-models", *args.flag_models]
    chosen = {k: v for k, v in FLAG_SETS.items() if not args.flag_filter or any(f in k for f in args.flag_filter)}
    chosen = {"default": "", **chosen, "default (again, for drift)": ""}
    runs: dict[str, list[dict]] = {label: [] for label in chosen}
    notes: dict[str, str] = {}
    for round_index in range(args.flag_rounds):
        for label, xla_flags in chosen.items():
            start = time.perf_counter()
            result, note = _run_flag_child(base_cmd, xla_flags)
            state = f"ok in {time.perf_counter() - start:.0f}s" if result else f"rejected ({note})"
            print(f"  round {round_index + 1}, {label}: {state}", flush=True)
            if result:
                runs[label].append(result)
            else:
                notes[label] = note
    defaults = runs["default"] + runs["default (again, for drift)"]
    rows = []
    for label, xla_flags in chosen.items():
        setting = f"{label} `{xla_flags}`" if xla_flags else label
        if not runs[label]:
            rows.append([setting, "rejected", "", "", "", "", notes.get(label, "")])
            continue
        for name in args.flag_models:
            best = min(r[name]["best"] for r in runs[label])
            median = statistics.median(r[name]["median"] for r in runs[label])
            reference = min(r[name]["best"] for r in defaults)
            last = runs[label][-1][name]
            kernels = ", ".join(f"{k} {v}" for k, v in last["kernels"].items()) or "none"
            change = f"{100 * (best / reference - 1):+.0f}%"
            rows.append([setting, name, 1e3 * best, 1e3 * median, change, last["compile_s"], kernels])
    print_table(
        [
            "XLA_FLAGS",
            "model",
            "ms/step (best)",
            "ms/step (median)",
            "vs best default run",
            "compile s",
            "library kernels in HLO",
        ],
        rows,
        title=f"bert_jax float32 train step under XLA_FLAGS (a child process each, {args.flag_rounds} round(s) of "
        f"{args.repeats} repeats)",
    )
    for name in args.flag_models:
        times = ", ".join(f"{1e3 * r[name]['best']:.0f}" for r in defaults)
        print(f"noise floor, {name}: the default runs' best ms/step were {times}")


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="compare", help="comma-separated: compare, variants, trace, flags")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--predictions", type=int, default=20, help="masked slots per row (P)")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per candidate (best and median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per candidate")
    parser.add_argument("--batches", type=int, default=4, help="distinct synthetic batches cycled through")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    parser.add_argument(
        "--no-gathered", dest="gathered", action="store_false", help="drop the PyTorch gathered-head rows"
    )
    parser.add_argument("--variants-model", default="bert_tiny", choices=list(MODELS))
    parser.add_argument("--variants-filter", nargs="*", default=[], help="only variants whose label contains one")
    parser.add_argument("--trace-model", default="bert_tiny", choices=list(MODELS))
    parser.add_argument("--trace-dtype", default="float32", choices=["float32", "bfloat16"], help="model.dtype")
    parser.add_argument("--trace-steps", type=int, default=5)
    parser.add_argument("--trace-top", type=int, default=25)
    parser.add_argument("--flag-models", nargs="+", default=["bert_tiny"], choices=list(MODELS))
    parser.add_argument("--flag-rounds", type=int, default=1, help="times the whole flag list is run")
    parser.add_argument("--flag-filter", nargs="*", help="only the FLAG_SETS labels containing one of these")
    parser.add_argument("--json", help="write the compare section's numbers here (input_pipeline.py reads them)")
    parser.add_argument("--worker", choices=["flags"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    shapes = Shapes(args.batch, args.seq, args.vocab, args.predictions, args.dropout)
    if args.worker == "flags":
        print("RESULT " + json.dumps(flags_worker(args, shapes)), flush=True)
        return
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    start = cpu_snapshot()
    print(
        f"machine: {cpu_description()}; jax {jax.__version__}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, transformers {transformers.__version__}; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}; code {code_version()}",
        flush=True,
    )
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"compare", "variants", "trace", "flags"}
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}")
    results: dict[str, Any] = {"shapes": dataclasses.asdict(shapes)}
    if "compare" in sections:
        results["compare"] = compare(args, shapes)
    if "variants" in sections:
        results["variants"] = variants(args, shapes)
    if "trace" in sections:
        trace(args, shapes)
    if "flags" in sections:
        flags(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(f"\n{contention_since(start)}")


if __name__ == "__main__":
    main()
