"""Forward throughput of bert_jax against Hugging Face BertModel in PyTorch, same process, same run.

Compares the encoder without MLM/NSP heads (embeddings + layers + pooler, what
`transformers.BertModel` is) at BERT-base shapes by default:

- bert_jax jitted, float32 and bfloat16 compute (`model.dtype`), scanned layers;
  plus float32 with `scan_layers=False`, to show what the scan costs at run time;
- PyTorch eager float32 under `torch.no_grad()`, bfloat16 autocast, and the
  model cast to bfloat16 (often the fastest PyTorch CPU setting, so the
  comparison is against the best PyTorch can do, not a straw man); on a CPU
  where torch's bf16 matmul has no fast kernel (AVX2 only: ~1 GFLOP/s) the
  bf16 rows are left out with a note (`common.torch_bf16_is_slow`);
- what-if rows: bert_jax with two changes patched in while tracing (the
  package is not edited), to measure what they would be worth: dots that
  return float32 in bfloat16 mode (`f32_accumulating_dots`) and attention
  contracted in heads-first layout (`heads_first_attention`).

Both frameworks get the same weights (bert_jax's params written with
`save_pretrained` and loaded by `from_pretrained`), and the float32 outputs are
compared once, so the rows time the same computation. The candidates run
round-robin (see `common.time_interleaved`) to share the machine's noise.

Run `python bench/forward_throughput.py --layers 2 --hidden 128 --batch 4 --repeats 2`
for a smoke test.
"""

from __future__ import annotations

# isort: off
import bert_jax  # noqa: F401  (first: its import applies bert_jax/host_memory.py before numpy/torch start threads)
# isort: on

import argparse
import contextlib
import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from common import (
    bert_forward_flops,
    contention_since,
    cpu_description,
    cpu_snapshot,
    jax_matmul_gflops,
    print_table,
    slow_bf16_note,
    time_interleaved,
    torch_bf16_is_slow,
    torch_matmul_gflops,
)

from bert_jax.config_base import base_config, model_config
from bert_jax.models import build_model, init_params


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=None, help="default: hidden // 64")
    parser.add_argument("--intermediate", type=int, default=None, help="default: 4 * hidden")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting (best and median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per setting (the first one compiles)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    return parser.parse_args()


def make_batch(batch: int, seq: int, vocab_size: int) -> dict[str, np.ndarray]:
    """Full-length sentence pairs (no padding): random ids, segment 1 in the second half."""
    rng = np.random.default_rng(0)
    types = np.zeros((batch, seq), np.int32)
    types[:, seq // 2 :] = 1
    return {
        "input_ids": rng.integers(1, vocab_size, (batch, seq), dtype=np.int32),
        "attention_mask": np.ones((batch, seq), np.int32),
        "token_type_ids": types,
    }


def jax_forward(model: Any, params: dict, batch: dict[str, np.ndarray]) -> Callable[[], Any]:
    """A zero-argument forward, compiled ahead of time, on device-resident inputs.

    Compiling here (not at the first call) fixes the traced program at
    construction, which `f32_accumulating_dots` relies on; it returns the
    hidden states and the pooled output, like `transformers.BertModel`.
    """
    inputs = [jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
    apply = jax.jit(
        lambda p, ids, mask, types: model.apply({"params": p}, ids, attention_mask=mask, token_type_ids=types)
    )
    compiled = apply.lower(params, *inputs).compile()

    def run():
        out = compiled(params, *inputs)
        return out.last_hidden_state, out.pooled_output

    return run


@contextlib.contextmanager
def f32_accumulating_dots() -> Iterator[None]:
    """What-if, for the report only: bf16 x bf16 dots traced here get a float32 result, cast back to bf16.

    flax's Dense/DenseGeneral look `jax.lax.dot_general` up at call time, so
    swapping it while tracing changes every projection of the model without
    editing it. XLA:CPU upcasts a bf16-result dot to float32 before the
    matmul (no bf16 speed-up), but feeds a float32-result dot's bf16 operands
    to its bf16 kernel (see xla_cpu_bf16.py); this measures what the model
    would gain from asking for the float32 result.
    """
    original = jax.lax.dot_general

    def dot_general(lhs, rhs, *args, preferred_element_type=None, **kwargs):
        if preferred_element_type is None and lhs.dtype == rhs.dtype == jnp.bfloat16:
            out = original(lhs, rhs, *args, preferred_element_type=jnp.float32, **kwargs)
            return out.astype(jnp.bfloat16)
        return original(lhs, rhs, *args, preferred_element_type=preferred_element_type, **kwargs)

    jax.lax.dot_general = dot_general
    try:
        yield
    finally:
        jax.lax.dot_general = original


HEADS_FIRST = {  # bert_jax's attention einsums -> (transpose of each operand, heads-first einsum, transpose of result)
    "bqhd,bkhd->bhqk": ((0, 2, 1, 3), (0, 2, 1, 3), "bhqd,bhkd->bhqk", None),
    "bhqk,bkhd->bqhd": (None, (0, 2, 1, 3), "bhqk,bhkd->bhqd", (0, 2, 1, 3)),
}


@contextlib.contextmanager
def heads_first_attention() -> Iterator[None]:
    """What-if, for the report only: the two attention einsums traced here run on [batch, heads, seq, dim].

    bert_jax's attention contracts [batch, seq, heads, dim] tensors directly
    ("bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd"). On XLA:CPU that layout keeps the
    batched matmuls out of the fast library kernel; transposing the operands
    to heads-first first (what `jax.nn.dot_product_attention` does too) is the
    same arithmetic, so the outputs agree to rounding. `jnp.einsum` is looked
    up at call time, so swapping it while tracing changes only these two
    contractions (matched by their exact subscripts).
    """
    original = jnp.einsum

    def einsum(subscripts, *operands, **kwargs):
        if subscripts not in HEADS_FIRST or len(operands) != 2:
            return original(subscripts, *operands, **kwargs)
        perm_a, perm_b, heads_first, perm_out = HEADS_FIRST[subscripts]
        a, b = (x if perm is None else x.transpose(perm) for x, perm in zip(operands, (perm_a, perm_b), strict=True))
        out = original(heads_first, a, b, **kwargs)
        return out if perm_out is None else out.transpose(perm_out)

    jnp.einsum = einsum
    try:
        yield
    finally:
        jnp.einsum = original


def measure_peaks() -> dict[str, float]:
    """Matmul GFLOP/s of each framework and dtype; for JAX bf16 the better of a bf16 and a float32 result."""
    return {
        "JAX float32": jax_matmul_gflops("float32"),
        "JAX bfloat16": max(
            jax_matmul_gflops("bfloat16"), jax_matmul_gflops("bfloat16", preferred_element_type="float32")
        ),
        "torch float32": torch_matmul_gflops("float32"),
        "torch bfloat16": torch_matmul_gflops("bfloat16"),
    }


def torch_forward(
    model: torch.nn.Module, batch: dict[str, np.ndarray], autocast: bool = False
) -> Callable[[], torch.Tensor]:
    """A zero-argument eager forward under no_grad (and bfloat16 autocast if asked)."""
    inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}

    def run():
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.no_grad(), amp:
            return model(**inputs).last_hidden_state

    return run


def main() -> None:
    args = parse_args()
    start = cpu_snapshot()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    heads = args.heads or max(1, args.hidden // 64)
    intermediate = args.intermediate or 4 * args.hidden
    sizes = {
        "num_layers": args.layers,
        "hidden_size": args.hidden,
        "embedding_size": args.hidden,
        "num_heads": heads,
        "intermediate_size": intermediate,
    }
    print(
        f"machine: {cpu_description()}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, transformers {transformers.__version__}"
    )
    print(f"shapes: batch {args.batch}, seq {args.seq}, {sizes}", flush=True)

    peaks_before = measure_peaks()

    common_cfg = {**sizes, "mlm_head": False, "pair_head": False}
    cfg32 = model_config(**common_cfg)
    model32 = build_model(cfg32)
    params = init_params(model32, jax.random.key(0))
    model_bf16 = build_model(model_config(**common_cfg, dtype="bfloat16"))  # same param tree, float32 weights
    model_unrolled = build_model(model_config(**common_cfg, scan_layers=False))
    params_unrolled = init_params(model_unrolled, jax.random.key(0))

    with tempfile.TemporaryDirectory() as tmp:
        bert_jax.save_pretrained(tmp, params, base_config(cfg32))
        torch_model = transformers.BertModel.from_pretrained(tmp).eval()
    torch_bf16_model = copy.deepcopy(torch_model).to(torch.bfloat16).eval()  # weights and activations bf16

    batch = make_batch(args.batch, args.seq, cfg32.vocab_size)
    with f32_accumulating_dots():
        what_if_bf16 = jax_forward(model_bf16, params, batch)
    with heads_first_attention():
        what_if_attention = jax_forward(model32, params, batch)
    with f32_accumulating_dots(), heads_first_attention():
        what_if_both = jax_forward(model_bf16, params, batch)
    candidates = {  # name -> (forward, key of the matmul peak of its dtype)
        "bert_jax float32": (jax_forward(model32, params, batch), "JAX float32"),
        "bert_jax bfloat16": (jax_forward(model_bf16, params, batch), "JAX bfloat16"),
        "bert_jax float32, scan_layers=False": (jax_forward(model_unrolled, params_unrolled, batch), "JAX float32"),
        "what-if: float32, heads-first attention": (what_if_attention, "JAX float32"),
        "what-if: bfloat16, f32-result dots": (what_if_bf16, "JAX bfloat16"),
        "what-if: bfloat16, f32-result dots + heads-first attention": (what_if_both, "JAX bfloat16"),
        "torch float32 eager": (torch_forward(torch_model, batch), "torch float32"),
        "torch bfloat16 autocast": (torch_forward(torch_model, batch, autocast=True), "torch bfloat16"),
        "torch bfloat16 weights": (torch_forward(torch_bf16_model, batch), "torch bfloat16"),
    }
    if torch_bf16_is_slow(peaks_before):
        print(slow_bf16_note(peaks_before))
        del candidates["torch bfloat16 autocast"], candidates["torch bfloat16 weights"]

    jax_out = np.asarray(candidates["bert_jax float32"][0]()[0])
    print("\nparity, max |difference| of last_hidden_state from bert_jax float32:")
    for name in (
        "torch float32 eager",
        "what-if: float32, heads-first attention",
        "bert_jax bfloat16",
        "what-if: bfloat16, f32-result dots + heads-first attention",
        "torch bfloat16 autocast",
        "torch bfloat16 weights",  # LayerNorm and softmax in bf16 too: a coarser computation than the others
    ):
        if name not in candidates:
            continue
        out = candidates[name][0]()
        out = out.float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out[0], np.float32)
        print(f"  {name}: {np.abs(out - jax_out).max():.2e}")

    timings = time_interleaved({name: fn for name, (fn, _) in candidates.items()}, args.warmup, args.repeats)
    peaks_after = measure_peaks()  # again: a busy spell during the first measurement must not inflate MFU
    peaks = {key: max(peaks_before[key], peaks_after[key]) for key in peaks_before}
    print_table(
        ["matmul 2048x2048x2048", "GFLOP/s before", "GFLOP/s after", "peak used (max)"],
        [[key, peaks_before[key], peaks_after[key], peaks[key]] for key in peaks],
        title="Measured matmul peaks (best of 10 each)",
    )
    flops = bert_forward_flops(args.batch, args.seq, args.layers, args.hidden, intermediate)
    rows = []
    for name, (_, peak_key) in candidates.items():
        t = timings[name]
        own_peak = peaks[peak_key]
        gflops = flops / t.best / 1e9
        rows.append(
            [
                name,
                args.batch / t.best,
                args.batch / t.median,
                1e3 * t.best,
                gflops,
                f"{100 * gflops / peaks['JAX float32']:.0f}%",
                f"{100 * gflops / own_peak:.0f}%",
                f"{t.n_clean}/{len(t.times)}",
            ]
        )
    print_table(
        [
            "setting",
            "seq/s (best)",
            "seq/s (median)",
            "ms/batch (best)",
            "GFLOP/s",
            "MFU vs JAX f32 peak",
            "MFU vs own-dtype peak",
            "clean repeats",
        ],
        rows,
        title=f"Forward, batch {args.batch} x seq {args.seq}, {flops / 1e9:.4g} GFLOP per batch, "
        f"{args.repeats} interleaved repeats",
    )
    best_torch = min((n for n in timings if n.startswith("torch")), key=lambda n: timings[n].best)
    print(f"\nbest PyTorch setting: {best_torch}")
    for name in (n for n in timings if not n.startswith("torch")):  # bert_jax and what-if rows
        ratio, ratio_median = (
            timings[best_torch].best / timings[name].best,
            timings[best_torch].median / timings[name].median,
        )
        print(f"{name} / {best_torch}: {ratio:.2f}x (best), {ratio_median:.2f}x (median)")
    print(f"\n{contention_since(start)}")


if __name__ == "__main__":
    main()
